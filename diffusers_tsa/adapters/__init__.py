"""Model adapters: one module (or folder) per video model family behind the `ModelSpec` / `ModelAdapter` interface.

Every module of this package is imported here, and each family registers itself with `register_adapter`: adding a
family adds one module and touches nothing else.
"""

import importlib
import pkgutil

from .base import GenerationSettings, ModelAdapter, ModelSpec
from .registry import ADAPTERS, load_spec, register_adapter


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ADAPTERS", "GenerationSettings", "ModelAdapter", "ModelSpec", "load_spec", "register_adapter"]
