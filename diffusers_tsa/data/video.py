"""Reading training clips the way diffusers' CogVideoX examples do (4k+1 frames, resize, crop, [-1, 1]) with the first
installed of torchcodec, decord and imageio-ffmpeg."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..choices import DEPRECATED_RESHAPE_MODES, RESHAPE_MODES, VIDEO_BACKEND_NAMES
from ..errors import GridError, UsageError, VideoDecodeError


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
            resize that covers `height x width`, or `"stretch"` to resize straight to `height x width` (`"none"`,
            its deprecated name, is read as `"stretch"` with a `FutureWarning`).

    Clips giving fewer than `num_frames` frames raise `VideoDecodeError`, so every clip of a batch has the same length.
    """

    height: int = 480
    width: int = 720
    max_num_frames: int = 49
    skip_frames_start: int = 0
    skip_frames_end: int = 0
    reshape_mode: str = "center"

    def __post_init__(self):
        if self.reshape_mode in DEPRECATED_RESHAPE_MODES:
            new = DEPRECATED_RESHAPE_MODES[self.reshape_mode]
            warnings.warn(
                f"`ClipSpec.reshape_mode={self.reshape_mode!r}` is deprecated: use {new!r}.",
                FutureWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "reshape_mode", new)
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


def recorded_clip_settings(recorded: dict) -> dict:
    """`ClipSpec` fields as a dataset or a run recorded them, with deprecated reshape-mode names read as today's."""
    mode = recorded.get("reshape_mode")
    return (
        {**recorded, "reshape_mode": DEPRECATED_RESHAPE_MODES.get(mode, mode)}
        if "reshape_mode" in recorded
        else recorded
    )


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


def _bytes_and_path(source: VideoSource) -> tuple[bytes | None, str | None]:
    """`(bytes, None)` for a clip given by its bytes (they win over a path), else `(None, path)`."""
    data = source.get("bytes") if isinstance(source, dict) else source if isinstance(source, bytes) else None
    if data:
        return data, None
    path = source.get("path") if isinstance(source, dict) else source
    return None, os.fspath(path)


#: Decoding result: `(total frames, kept indices, kept frames (T, H, W, 3) uint8, or None when too few)`.
_Decoded = tuple[int, list[int], Union[np.ndarray, None]]


def _decode_with_torchcodec(source: VideoSource, spec: ClipSpec) -> _Decoded:
    """Random access by frame index with torchcodec (PyTorch's decoder, FFmpeg's libraries)."""
    from torchcodec.decoders import VideoDecoder

    data, path = _bytes_and_path(source)
    try:
        decoder = VideoDecoder(data if data is not None else path, seek_mode="exact", dimension_order="NHWC")
        total = decoder.metadata.num_frames
        indices = select_frame_indices(total, spec)
        if len(indices) < spec.num_frames:
            return total, indices, None
        return total, indices, decoder.get_frames_at(indices).data.numpy()
    except (RuntimeError, ValueError, IndexError) as err:
        raise VideoDecodeError(describe_source(source), f"torchcodec cannot decode it ({err}).") from err


def _decode_with_decord(source: VideoSource, spec: ClipSpec) -> _Decoded:
    """Random access by frame index with decord."""
    import decord

    data, path = _bytes_and_path(source)
    try:
        reader = decord.VideoReader(io.BytesIO(data) if data is not None else path, num_threads=0)
    except (decord.DECORDError, RuntimeError) as err:  # what decord raises for anything it cannot parse
        raise VideoDecodeError(describe_source(source), f"decord cannot decode it ({err}).") from err
    total = len(reader)
    indices = select_frame_indices(total, spec)
    try:
        # Decoded even when too few, to tell a short clip from a file that is no video: decord opens some of those
        # (a text file is "one frame") and fails only here, as it does on truncated streams.
        frames = reader.get_batch(indices or [0]).asnumpy()
    except (decord.DECORDError, RuntimeError) as err:
        raise VideoDecodeError(
            describe_source(source), f"it is not a video, or it is damaged: decoding its frames failed ({err})."
        ) from err
    return total, indices, frames if len(indices) >= spec.num_frames else None


@contextlib.contextmanager
def _ffmpeg_input(data: bytes | None, path: str | None):
    """`(input path, fds to pass)` for the ffmpeg executable: the file, or the bytes in an in-memory file
    (`memfd`, Linux) that ffmpeg can seek in; a temporary file only where there is no memfd (macOS, Windows)."""
    if data is None:
        yield path, ()
    elif hasattr(os, "memfd_create"):
        fd = os.memfd_create("clip")
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}", (fd,)
        finally:
            os.close(fd)
    else:
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "clip"), "wb") as file:
                file.write(data)
            yield file.name, ()


def _run_ffmpeg(args: list[str], fds: tuple[int, ...]) -> subprocess.CompletedProcess:
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    return subprocess.run(command, capture_output=True, pass_fds=fds, check=False)


_VIDEO_SIZE = re.compile(rb"Stream #.*?: Video: .*?, (\d+)x(\d+)[ ,\n]")
_FRAME_COUNT = re.compile(rb"frame=\s*(\d+)")


def _decode_with_ffmpeg(source: VideoSource, spec: ClipSpec) -> _Decoded:
    """imageio-ffmpeg's executable: the frames are counted from the stream's packets (no decoding), then only the
    kept ones are converted and returned (ffmpeg stops after the last one)."""
    name = describe_source(source)
    with _ffmpeg_input(*_bytes_and_path(source)) as (path, fds):
        probe = _run_ffmpeg(["-i", path, "-map", "0:v:0", "-c", "copy", "-f", "null", "-"], fds)
        size, counts = _VIDEO_SIZE.search(probe.stderr), _FRAME_COUNT.findall(probe.stderr)
        if probe.returncode != 0 or size is None or not counts:
            reason = probe.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no video stream"]
            raise VideoDecodeError(name, f"ffmpeg cannot decode it ({reason[0]}).")
        total, (width, height) = int(counts[-1]), (int(size[1]), int(size[2]))
        indices = select_frame_indices(total, spec)
        if len(indices) < spec.num_frames:
            return total, indices, None
        select = "select='" + "+".join(f"eq(n\\,{i})" for i in indices) + "'"
        args = ["-i", path, "-map", "0:v:0", "-vf", select, "-fps_mode", "passthrough"]
        args += ["-frames:v", str(len(indices)), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        decoded = _run_ffmpeg(args, fds)
    frame_bytes = height * width * 3
    if decoded.returncode != 0 or len(decoded.stdout) != frame_bytes * len(indices):
        got = len(decoded.stdout) // frame_bytes
        raise VideoDecodeError(name, f"ffmpeg decoded {got} of the {len(indices)} frames asked for (truncated?).")
    return total, indices, np.frombuffer(bytearray(decoded.stdout), np.uint8).reshape(len(indices), height, width, 3)


#: The decoders, in the order `backend="auto"` tries them (the first installed one reads each clip, the next ones
#: read what it cannot, e.g. decord refuses some widths under 64 px).
VIDEO_BACKENDS = dict(zip(VIDEO_BACKEND_NAMES, (_decode_with_torchcodec, _decode_with_decord, _decode_with_ffmpeg)))
_MODULES = {"torchcodec": "torchcodec.decoders", "decord": "decord", "imageio-ffmpeg": "imageio_ffmpeg"}
#: The environment variable that `use_video_backend` sets: the default of `read_video`'s `backend`, inherited by
#: data-loader workers however they start.
VIDEO_BACKEND_ENV = "DIFFUSERS_TSA_VIDEO_BACKEND"


@functools.lru_cache(maxsize=None)
def available_video_backends() -> tuple[str, ...]:
    """The decoders of `VIDEO_BACKENDS` that import here, in their order (torchcodec also needs FFmpeg's shared
    libraries: without them it does not count as installed)."""
    found = []
    for backend, module in _MODULES.items():
        try:
            importlib.import_module(module)
        except (ImportError, OSError, RuntimeError):
            continue
        found.append(backend)
    return tuple(found)


def use_video_backend(backend: str) -> None:
    """Makes `backend` (`"auto"` or one of `VIDEO_BACKENDS`) the default of `read_video` in this process and the
    processes it starts.

    Raises:
        `UsageError`: an unknown backend, or one that is not installed.
    """
    _check_backend(backend)
    os.environ[VIDEO_BACKEND_ENV] = backend


def _check_backend(backend: str) -> None:
    if backend != "auto" and backend not in VIDEO_BACKENDS:
        raise UsageError(f"`video_backend={backend!r}` must be 'auto' or one of {tuple(VIDEO_BACKENDS)}.")
    if backend != "auto" and backend not in available_video_backends():
        hint = (
            "`pip install torchcodec` (and FFmpeg's libraries)"
            if backend == "torchcodec"
            else f"`pip install {backend}`"
        )
        raise UsageError(f"`video_backend={backend!r}` is not installed: {hint}, or use 'auto'.")
    if not available_video_backends():
        raise UsageError("No video decoder is installed: `pip install torchcodec`, `decord` or `imageio-ffmpeg`.")


# Adapted from diffusers' examples/cogvideo/train_cogvideox_lora.py (`VideoDataset._resize_for_rectangle_crop`).
def _resize_and_crop(frames: torch.Tensor, spec: ClipSpec, generator: torch.Generator | None) -> torch.Tensor:
    """Resizes `(T, C, H, W)` float frames in [0, 255] to `spec.height x spec.width` (bicubic, antialiased)."""
    height, width = frames.shape[-2:]
    if spec.reshape_mode == "stretch":
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


def read_video(
    source: VideoSource, spec: ClipSpec, *, generator: torch.Generator | None = None, backend: str | None = None
) -> torch.Tensor:
    """Decodes one clip once and returns it ready for the VAE and the teacher.

    Args:
        source (`str`, `os.PathLike`, `bytes` or `dict`): the clip, as a path, its bytes, or a
            `datasets.Video(decode=False)` value `{"path": ..., "bytes": ...}` (bytes win when both are set).
        spec (`ClipSpec`): frame selection, size and crop.
        generator (`torch.Generator`, *optional*): drives the crop position when `spec.reshape_mode == "random"`.
        backend (`str`, *optional*): `"auto"` (the first installed of torchcodec, decord and imageio-ffmpeg, then
            the next ones for a clip it cannot read) or one of them alone; defaults to what `use_video_backend` set
            (`--video_backend`), else `"auto"`. Each reads only the kept frames, by index.

    Returns:
        `torch.Tensor`: float32 pixels in [-1, 1] of shape `(T, C, H, W)` with `T = 4k + 1`, `C = 3`,
        `H, W = spec.height, spec.width`.

    Raises:
        `VideoDecodeError`: the clip is missing, unreadable, truncated, or gives fewer than `spec.num_frames`
        frames. Callers catch it to skip the clip and count it.
        `UsageError`: `backend` is unknown or not installed.
    """
    backend = backend or os.environ.get(VIDEO_BACKEND_ENV, "auto")
    _check_backend(backend)
    if _missing(source):
        raise VideoDecodeError(describe_source(source), "the file does not exist.")
    first_error = None
    for name in available_video_backends() if backend == "auto" else (backend,):
        try:
            total, indices, frames = VIDEO_BACKENDS[name](source, spec)
            break
        except VideoDecodeError as err:
            first_error = first_error or err
    else:
        raise first_error  # the reason of the first decoder tried, the usual one
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
