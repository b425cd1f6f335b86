"""Model adapters: one module (or folder) per video model family behind the `ModelSpec` / `ModelAdapter` interface.

Every module of this package is imported here, and each family registers itself with `register_adapter`: adding a
family adds one module and touches nothing else.
"""

import importlib
import pkgutil

from .adapter import ComponentClasses, ModelAdapter
from .options import GenerationSettings, TrainingOptions
from .registry import ADAPTERS, load_spec, register_adapter
from .spec import LORA_WEIGHT_NAME, ModelSpec


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ADAPTERS",
    "LORA_WEIGHT_NAME",
    "ComponentClasses",
    "GenerationSettings",
    "ModelAdapter",
    "ModelSpec",
    "TrainingOptions",
    "load_spec",
    "register_adapter",
]
