"""Packages whose public names are imported on first use, so that importing the package (or one of its light
modules) imports no torch, diffusers, transformers or datasets."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, sources: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module `__getattr__` and `__dir__` of a package that re-exports each name of `sources` from its module.

    Args:
        package (`str`): the package's `__name__`.
        sources (`Mapping[str, str]`): public name -> the module it comes from, relative to `package` (`".plan"`).
    """

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *sources})

    return __getattr__, __dir__
