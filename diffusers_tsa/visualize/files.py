"""Writing pictures: a PNG, or an mp4 of pictures of one size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def save_png(picture: np.ndarray, path: str | os.PathLike) -> Path:
    """Writes an `(H, W, 3)` uint8 picture as a PNG (creating its folder) and returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path


def save_mp4(pictures: Sequence[np.ndarray], path: str | os.PathLike, *, fps: float = 8) -> Path:
    """Writes `(H, W, 3)` uint8 pictures of one size as an H.264 mp4 with diffusers' `export_to_video` (imageio-ffmpeg),
    padded with white to a multiple of 16 pixels, and returns the path."""
    from diffusers.utils import export_to_video
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = pictures[0].shape[:2]
    pad = ((0, -height % 16), (0, -width % 16), (0, 0))
    export_to_video([Image.fromarray(np.pad(p, pad, constant_values=255)) for p in pictures], str(path), fps=fps)
    return path
