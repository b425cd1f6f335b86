"""Model adapters: one module per video model family behind the `ModelAdapter` interface."""

from __future__ import annotations

import os

from .base import ModelAdapter, ModelSpec
from .cogvideox import CogVideoXAdapter, CogVideoXSpec
from .nova import NOVAAdapter, NOVASpec

#: `--model_family` -> adapter class.
ADAPTERS: dict[str, type[ModelAdapter]] = {"cogvideox": CogVideoXAdapter, "nova": NOVAAdapter}
#: `_class_name` in a checkpoint's `model_index.json` -> `--model_family`.
PIPELINE_FAMILIES = {"CogVideoXPipeline": "cogvideox", "NOVAPipeline": "nova"}


def detect_family(pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> str:
    """The adapter family of a pipeline checkpoint, from its `model_index.json` (no weights are read)."""
    from diffusers import DiffusionPipeline

    class_name = DiffusionPipeline.load_config(pretrained_model_name_or_path, **kwargs).get("_class_name")
    if class_name not in PIPELINE_FAMILIES:
        raise ValueError(
            f"Cannot tell the model family of {pretrained_model_name_or_path} (pipeline class {class_name!r}); pass "
            f"--model_family, one of {sorted(ADAPTERS)}."
        )
    return PIPELINE_FAMILIES[class_name]


__all__ = [
    "ADAPTERS", "CogVideoXAdapter", "CogVideoXSpec", "ModelAdapter", "ModelSpec", "NOVAAdapter", "NOVASpec", "detect_family",
]
