"""A tiny NOVA checkpoint importable in this process and in the processes a test launches: the double's `diffnext`
on `sys.path` / `PYTHONPATH`, or the real package with the small archs registered first."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .builders import install_diffnext_double, save_tiny_nova_pipeline, save_tiny_real_nova_pipeline


@contextlib.contextmanager
def diffnext_modules() -> Iterator[None]:
    """Imports of `diffnext` inside the block start afresh, and are forgotten after it."""

    def ours():
        return [name for name in sys.modules if name.split(".")[0] == "diffnext"]

    saved = {name: sys.modules.pop(name) for name in ours()}
    try:
        yield
    finally:
        for name in ours():
            del sys.modules[name]
        sys.modules.update(saved)


@dataclass(frozen=True)
class TinyNOVA:
    """A tiny NOVA checkpoint on disk.

    Args:
        kind (`str`): `"double"` (this package's stand-in for `diffnext`) or `"real"` (NOVA's own package).
        path (`Path`): the checkpoint folder (`model_index.json` and one subfolder per component).
        site (`Path`, *optional*): the folder holding the double's `diffnext` package; `None` for the real one.
    """

    kind: str
    path: Path
    site: Path | None

    @property
    def launcher(self) -> tuple[str, ...]:
        """What goes before a Python file run by a launched process (after `python` or `accelerate launch`): on the
        real package, `-m diffusers_tsa.testing.nova.with_tiny_archs`, which registers the tiny archs first, as
        NOVA's configs register its own."""
        return ("-m", "diffusers_tsa.testing.nova.with_tiny_archs") if self.kind == "real" else ()

    def env(self) -> dict[str, str]:
        """The environment of a launched process: offline, with the double's `diffnext` (if any) and this package
        importable."""
        package_root = Path(__file__).resolve().parents[3]
        paths = [*([self.site] if self.site else []), package_root, os.environ.get("PYTHONPATH", "")]
        return {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(str(p) for p in paths if str(p)),
        }


@contextlib.contextmanager
def tiny_nova_checkpoint(root: str | os.PathLike, kind: str = "double", seed: int = 0) -> Iterator[TinyNOVA]:
    """Writes a tiny NOVA checkpoint under `root` and, while the block runs, makes its `diffnext` importable here.

    Args:
        root (`str` or `os.PathLike`): an empty folder; the checkpoint goes to `root/base`, the double to `root/site`.
        kind (`str`, defaults to `"double"`): `"double"` or `"real"` (needs NOVA's `diffnext` installed).
        seed (`int`, defaults to 0): seed of the random initialisation.
    """
    root = Path(root)
    site = install_diffnext_double(root / "site") if kind == "double" else None
    with diffnext_modules():
        if site:
            sys.path.insert(0, str(site))
        try:
            builder = save_tiny_nova_pipeline if kind == "double" else save_tiny_real_nova_pipeline
            yield TinyNOVA(kind, builder(root / "base", seed), site)
        finally:
            if site:
                sys.path.remove(str(site))
