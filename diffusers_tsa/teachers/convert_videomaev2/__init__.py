"""VideoMAEv2 checkpoints (OpenGVLab's `VisionTransformer` layout) as transformers' `VideoMAEModel`: the conversion
(`conversion`) and its command (`python -m diffusers_tsa.teachers.convert_videomaev2`)."""

from .conversion import (
    HEAD_PREFIXES,
    convert_videomaev2,
    load_videomaev2_state_dict,
    read_videomaev2,
    transformers_to_videomaev2,
    videomaev2_config,
    videomaev2_to_transformers,
)


__all__ = [
    "HEAD_PREFIXES",
    "convert_videomaev2",
    "load_videomaev2_state_dict",
    "read_videomaev2",
    "transformers_to_videomaev2",
    "videomaev2_config",
    "videomaev2_to_transformers",
]
