"""Reading training clips the way diffusers' CogVideoX examples do: decord, 4k+1 frames, resize, crop, [-1, 1]."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..choices import RESHAPE_MODES
from ..errors import GridError, VideoDecodeError


#: A clip as a path, raw bytes, or a `datasets.Video(decode=False)` value `{"path": ..., "bytes": ...}`.
VideoSource = Union[str, os.PathLike, bytes, dict]


@dataclass(frozen=True)
class ClipSpec:
    """How a training clip is read (the flags of diffusers' `train_cogvideox_lora.py`).

    Args:
        height (`int`, defaults to 480): output height in pixels.
        width (`int`, defaults to 720): output width in pixels.
        max_num_frames (`int`, defaults to 49): frames kept at most, picked with a uniform integer stride over the
            clip; the count is then trimmed to the nearest `4k + 1` below, as the CogVideoX VAE needs.
        skip_frames_start (`int`, defaults to 0): frames dropped at the start before picking.
        skip_frames_end (`int`, defaults to 0): frames dropped at the end before picking.
        reshape_mode (`str`, defaults to `"center"`): `"center"` or `"random"` crop after an aspect-preserving
            resize that covers `height x width`, or `"none"` to resize straight to `height x width`.

    Clips giving fewer than `num_frames` frames raise `VideoDecodeError`, so every clip of a batch has the same length.
    """

    height: int = 480
    width: int = 720
    max_num_frames: int = 49
    skip_frames_start: int = 0
    skip_frames_end: int = 0
    reshape_mode: str = "center"

    def __post_init__(self):
        bad = [
            f"`ClipSpec.{name}={getattr(self, name)}` must be at least {low}"
            for name, low in (
                ("height", 1),
                ("width", 1),
                ("max_num_frames", 1),
                ("skip_frames_start", 0),
                ("skip_frames_end", 0),
            )
            if getattr(self, name) < low
        ]
        if self.reshape_mode not in RESHAPE_MODES:
            bad.append(f"`ClipSpec.reshape_mode={self.reshape_mode!r}` must be one of {RESHAPE_MODES}")
        if bad:
            raise GridError("Invalid clip settings: " + "; ".join(bad) + " (CogVideoX reads 49 frames at 480x720).")

    @property
    def num_frames(self) -> int:
        """Frames of a clip long enough to fill `max_num_frames` (the largest `4k + 1 <= max_num_frames`)."""
        return _trim_to_4k_plus_1(self.max_num_frames)


def _trim_to_4k_plus_1(n: int) -> int:
    return n - (n - 1) % 4 if n > 0 else 0


# Adapted from diffusers' examples/cogvideo/train_cogvideox_lora.py (`VideoDataset._preprocess_data`).
def select_frame_indices(total: int, spec: ClipSpec) -> list[int]:
    """Indices of the frames kept from a clip of `total` frames, following diffusers' CogVideoX example.

    Frames `[skip_frames_start, total - skip_frames_end)` are kept; when they are more than `max_num_frames`, a
    uniform integer stride `len // max_num_frames` picks them and the first `max_num_frames` are kept; the count is
    then trimmed to `4k + 1`. An empty list means nothing is left after skipping.
    """
    start = min(spec.skip_frames_start, total)
    end = max(0, total - spec.skip_frames_end)
    if end <= start:
        return []
    stride = max(1, (end - start) // spec.max_num_frames)
    indices = list(range(start, end, stride))[: spec.max_num_frames]
    return indices[: _trim_to_4k_plus_1(len(indices))]


def describe_source(source: VideoSource) -> str:
    """A short name of a clip for messages and logs."""
    if isinstance(source, dict):
        return str(source.get("path") or f"<{len(source.get('bytes') or b'')} bytes>")
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return os.fspath(source)


def _missing(source: VideoSource) -> bool:
    """Whether `source` names a file that does not exist (no decoder can help)."""
    if isinstance(source, bytes) or (isinstance(source, dict) and source.get("bytes")):
        return False
    path = source.get("path") if isinstance(source, dict) else source
    return path is None or not os.path.isfile(path)


def _open_reader(source: VideoSource):
    try:
        import decord
    except ImportError as err:  # decord has wheels for x86-64 Linux/Windows and Intel macOS only
        raise ImportError("Reading videos needs `decord`: `pip install decord`.") from err

    name = describe_source(source)
    if _missing(source):
        raise VideoDecodeError(name, "the file does not exist.")
    data = source.get("bytes") if isinstance(source, dict) else source if isinstance(source, bytes) else None
    path = source.get("path") if isinstance(source, dict) else None if isinstance(source, bytes) else source
    try:
        return decord.VideoReader(io.BytesIO(data) if data is not None else os.fspath(path), num_threads=0)
    except (decord.DECORDError, RuntimeError) as err:  # what decord raises for anything it cannot parse
        raise VideoDecodeError(name, f"decord cannot open it ({err}).") from err


# Adapted from diffusers' examples/cogvideo/train_cogvideox_lora.py (`VideoDataset._resize_for_rectangle_crop`).
def _resize_and_crop(frames: torch.Tensor, spec: ClipSpec, generator: torch.Generator | None) -> torch.Tensor:
    """Resizes `(T, C, H, W)` float frames in [0, 255] to `spec.height x spec.width` (bicubic, antialiased)."""
    height, width = frames.shape[-2:]
    if spec.reshape_mode == "none":
        size = (spec.height, spec.width)
    elif width * spec.height > spec.width * height:  # wider than the target: match the height
        size = (spec.height, int(width * spec.height / height))
    else:
        size = (int(height * spec.width / width), spec.width)
    if size != (height, width):
        frames = F.interpolate(frames, size=size, mode="bicubic", align_corners=False, antialias=True)
    delta_h, delta_w = size[0] - spec.height, size[1] - spec.width
    if spec.reshape_mode == "random":
        top = int(torch.randint(delta_h + 1, (1,), generator=generator))
        left = int(torch.randint(delta_w + 1, (1,), generator=generator))
    else:
        top, left = delta_h // 2, delta_w // 2
    return frames[..., top : top + spec.height, left : left + spec.width]


def _decode_with_decord(source: VideoSource, spec: ClipSpec) -> tuple[int, list[int], np.ndarray | None]:
    """`(total frames, kept indices, kept frames (T, H, W, 3) uint8)` decoded by decord, or `VideoDecodeError`."""
    reader = _open_reader(source)
    import decord  # available: `_open_reader` imported it

    total = len(reader)
    indices = select_frame_indices(total, spec)
    if len(indices) < spec.num_frames:
        return total, indices, None
    try:
        return total, indices, reader.get_batch(indices).asnumpy()
    except (decord.DECORDError, RuntimeError) as err:  # truncated streams fail here, after a successful open
        raise VideoDecodeError(describe_source(source), f"decoding frames failed ({err}).") from err


def _decode_with_ffmpeg(source: VideoSource, spec: ClipSpec) -> tuple[int, list[int], np.ndarray | None]:
    """The same with imageio-ffmpeg, which decodes every frame: the fallback for clips decord cannot read (e.g. some
    widths under 64 px) or platforms without decord."""
    import imageio_ffmpeg

    data = source.get("bytes") if isinstance(source, dict) else source if isinstance(source, bytes) else None
    with tempfile.TemporaryDirectory() if data is not None else contextlib.nullcontext() as folder:
        path = source.get("path") if isinstance(source, dict) else source
        if data is not None:
            path = os.path.join(folder, "clip")
            with open(path, "wb") as file:
                file.write(data)
        try:
            frames = imageio_ffmpeg.read_frames(os.fspath(path))
            width, height = next(frames)["size"]
            decoded = np.stack([np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in frames])
        except (RuntimeError, OSError, StopIteration, ValueError) as err:
            raise VideoDecodeError(describe_source(source), f"ffmpeg cannot decode it ({err}).") from err
    indices = select_frame_indices(len(decoded), spec)
    return len(decoded), indices, decoded[indices] if len(indices) >= spec.num_frames else None


def read_video(source: VideoSource, spec: ClipSpec, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Decodes one clip once and returns it ready for the VAE and the teacher.

    Args:
        source (`str`, `os.PathLike`, `bytes` or `dict`): the clip, as a path, its bytes, or a
            `datasets.Video(decode=False)` value `{"path": ..., "bytes": ...}` (bytes win when both are set).
        spec (`ClipSpec`): frame selection, size and crop.
        generator (`torch.Generator`, *optional*): drives the crop position when `spec.reshape_mode == "random"`.

    Returns:
        `torch.Tensor`: float32 pixels in [-1, 1] of shape `(T, C, H, W)` with `T = 4k + 1`, `C = 3`,
        `H, W = spec.height, spec.width`.

    Raises:
        `VideoDecodeError`: the clip is missing, unreadable, truncated, or gives fewer than `spec.num_frames`
        frames. Callers catch it to skip the clip and count it.
    """
    try:
        total, indices, frames = _decode_with_decord(source, spec)
    except (VideoDecodeError, ImportError) as err:
        if _missing(source):
            raise
        try:
            total, indices, frames = _decode_with_ffmpeg(source, spec)
        except (VideoDecodeError, ImportError):
            raise err from None  # decord's reason, the usual decoder's
    if frames is None:
        raise VideoDecodeError(
            describe_source(source),
            f"it has {total} frames, which give {len(indices)} after skipping {spec.skip_frames_start} + "
            f"{spec.skip_frames_end} and trimming to 4k+1, fewer than the {spec.num_frames} required "
            "(lower `ClipSpec.max_num_frames` to keep shorter clips).",
        )
    frames = rearrange(torch.from_numpy(np.ascontiguousarray(frames)), "t h w c -> t c h w").float()
    frames = _resize_and_crop(frames, spec, generator).clamp_(0.0, 255.0)
    return frames.div_(127.5).sub_(1.0)
