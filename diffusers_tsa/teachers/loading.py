"""Loading a teacher: `teacher_config` reads a checkpoint's config without weights, `teacher_geometry` the grid it gives,
and `load_teacher` the frozen teacher, its family found from the config (`model_type`) in `TEACHER_FAMILIES`, or a raw
VideoMAEv2 checkpoint file converted on the fly."""

from __future__ import annotations

import os

import torch

from ..errors import CheckpointError, UsageError
from ..paths import check_local_path, refuse_unreachable_hub
from .base import TeacherGeometry, TeacherInput, VideoTeacher, patch_sizes
from .convert_videomaev2 import convert_videomaev2, read_videomaev2
from .image import ImageTeacher
from .videomae import VideoMAETeacher
from .vjepa2 import VJEPA2Teacher


#: transformers `model_type` -> teacher class with a `from_pretrained(name_or_path, input, **kwargs)`.
TEACHER_FAMILIES: dict[str, type[VideoTeacher]] = {
    "videomae": VideoMAETeacher,
    "vjepa2": VJEPA2Teacher,
    "dinov2": ImageTeacher,
    "dinov2_with_registers": ImageTeacher,
    "dinov3_vit": ImageTeacher,
}
_RAW_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def teacher_config(
    name_or_path: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
    cache_dir: str | None = None,
    num_attention_heads: int | None = None,
):
    """A teacher checkpoint's transformers config, read without its weights.

    A raw VideoMAEv2 file has no config: its `VideoMAEConfig` is derived from the checkpoint's tensor shapes, read
    from the memory-mapped file (or the safetensors header) without reading any weight, and checked against them.

    Args:
        name_or_path (`str` or `os.PathLike`): see `load_teacher`.
        trust_remote_code (`bool`, defaults to `False`): allow code from the checkpoint's repository to run.
        revision (`str`, *optional*): Hub revision.
        cache_dir (`str`, *optional*): Hub cache folder.
        num_attention_heads (`int`, *optional*): heads of a raw VideoMAEv2 file (default: hidden size // 64).

    Raises:
        `UsageError`: for a checkpoint of a family that is not a supported teacher; `CheckpointError` for a raw
            VideoMAEv2 file that cannot be read or converted (`read_videomaev2`).
    """
    from transformers import AutoConfig

    check_local_path(name_or_path, "name_or_path")
    name = os.fspath(name_or_path)
    if _is_raw_checkpoint(name):
        return read_videomaev2(name, shapes_only=True, num_attention_heads=num_attention_heads)[1]
    try:
        config = AutoConfig.from_pretrained(
            name, trust_remote_code=trust_remote_code, revision=revision, cache_dir=cache_dir
        )
    except (OSError, ValueError) as err:  # no config, an unknown one, or a Hub repository that cannot be reached
        refuse_unreachable_hub(err, name, "name_or_path")
        reason = " ".join(str(err).split())
        raise CheckpointError(f"`name_or_path={name!r}` has no readable teacher config: {reason}") from None
    if config.model_type not in TEACHER_FAMILIES:
        raise UsageError(
            f"`name_or_path={name!r}` is a {config.model_type!r} model; supported teachers are "
            f"{sorted(TEACHER_FAMILIES)} checkpoints and raw VideoMAEv2 files ({', '.join(_RAW_CHECKPOINT_SUFFIXES)})."
        )
    return config


def teacher_geometry(name_or_path: str | os.PathLike, input: TeacherInput, config) -> TeacherGeometry:
    """The token grid, tubelet and width `load_teacher` gives for `input`, from the `teacher_config` alone.

    Lets a training script refuse a teacher grid its projector cannot reach before any weight is loaded.

    Raises:
        `GridError`: when the teacher's patch or tubelet does not divide `input`.
    """
    return TeacherGeometry(os.fspath(name_or_path), input, **patch_sizes(config))


def _is_raw_checkpoint(name: str) -> bool:
    return os.path.isfile(name) and name.endswith(_RAW_CHECKPOINT_SUFFIXES)


def load_teacher(
    name_or_path: str | os.PathLike,
    input: TeacherInput,
    *,
    config=None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    cache_dir: str | None = None,
    num_attention_heads: int | None = None,
) -> VideoTeacher:
    """Loads a frozen teacher set up for `input`.

    Args:
        name_or_path (`str` or `os.PathLike`): a transformers VideoMAE or V-JEPA 2 checkpoint (Hub name or folder,
            e.g. `MCG-NJU/videomae-base`, the output of `convert_videomaev2`, `facebook/vjepa2-vitl-fpc64-256`), a
            raw VideoMAEv2 checkpoint file (e.g. `vit_b_k710_dl_from_giant.pth`), converted on the fly, or an image
            backbone run frame by frame (`facebook/dinov2-base`, `facebook/dinov2-with-registers-base`, DINOv3 ViTs).
        input (`TeacherInput`): frames and size the teacher sees, e.g. `TeacherInput.for_clip(49, 480, 720)`.
        config (`transformers.PretrainedConfig`, *optional*): the checkpoint's `teacher_config`, when it was already
            read (it is then not read again).
        dtype (`torch.dtype`, defaults to `torch.float32`): dtype the teacher runs in.
        device (`str` or `torch.device`, *optional*): device the teacher runs on.
        trust_remote_code (`bool`, defaults to `False`): allow code from the checkpoint's repository to run
            (only for a checkpoint that needs it, and only when you trust it).
        revision (`str`, *optional*): Hub revision.
        cache_dir (`str`, *optional*): Hub cache folder.
        num_attention_heads (`int`, *optional*): heads of a raw VideoMAEv2 file (default: hidden size // 64).

    Returns:
        `VideoTeacher`: in eval mode, without gradients. Weights are read from safetensors, or with
        `torch.load(weights_only=True)`.

    Raises:
        `CheckpointError`: for a checkpoint that cannot be read, or whose weights do not fill the teacher's encoder
            (missing, unexpected or of another shape) instead of leaving them at random.
    """
    name = os.fspath(name_or_path)
    if _is_raw_checkpoint(name):
        model = convert_videomaev2(name, num_attention_heads=num_attention_heads)
        teacher = VideoMAETeacher(model, name=name, input=input)
    else:
        options = {"trust_remote_code": trust_remote_code, "revision": revision, "cache_dir": cache_dir}
        config = config or teacher_config(name, **options)
        teacher = TEACHER_FAMILIES[config.model_type].from_pretrained(name, input, config=config, **options)
    teacher.backbone.to(dtype=dtype)
    return teacher.to(device)
