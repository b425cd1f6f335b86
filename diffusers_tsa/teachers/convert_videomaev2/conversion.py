"""Converts a VideoMAEv2 checkpoint (OpenGVLab's `VisionTransformer` layout) to transformers' `VideoMAEModel`.

The paper's teacher is the distilled ViT-B `vit_b_k710_dl_from_giant.pth` of the `OpenGVLab/VideoMAE2` Hub repository,
a raw state dict under the key "module". Its blocks are transformers' VideoMAE blocks (pre-norm, a fused qkv with
separate q and v biases, LayerNorm eps 1e-6, fixed sinusoidal positions), so the conversion renames keys and splits
qkv; nothing is approximated. The classification head (`fc_norm`, `head`) is not part of the features and is dropped.

The command (`__main__`) writes the converted model to a folder:

    python -m diffusers_tsa.teachers.convert_videomaev2 vit_b_k710_dl_from_giant.pth videomaev2-base-distilled
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ...errors import CheckpointError, GridError, ModelLayoutError
from ..base import check_weights, multiples_near


# (VideoMAEv2 name, transformers name), per block then top level; qkv is split separately.
# Adapted from transformers' models/videomae/convert_videomae_to_pytorch.py (its key renaming), for VideoMAEv2's names.
_BLOCK_KEYS = (
    ("norm1", "layernorm_before"),
    ("attn.q_bias", "attention.attention.query.bias"),
    ("attn.v_bias", "attention.attention.value.bias"),
    ("attn.proj", "attention.output.dense"),
    ("norm2", "layernorm_after"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)
_TOP_KEYS = (("patch_embed.proj", "embeddings.patch_embeddings.projection"),)
_QKV = ("query", "key", "value")
#: Classification-head keys: trained for Kinetics labels, not part of the features.
HEAD_PREFIXES = ("fc_norm.", "head.")
_V2_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_HF_BLOCK = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
#: The tensors `videomaev2_config` reads the sizes from, with their number of dimensions.
_SIZE_KEYS = {"patch_embed.proj.weight": 5, "blocks.0.mlp.fc1.weight": 2}
#: What `torch.load` and `safe_open` raise for a file that is not a readable checkpoint.
_UNREADABLE = (OSError, EOFError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError, SafetensorError)


def _rename(name: str, pairs: tuple[tuple[str, str], ...], reverse: bool) -> str | None:
    for v2, hf in pairs:
        src, dst = (hf, v2) if reverse else (v2, hf)
        if name == src or name.startswith(src + "."):
            return dst + name[len(src) :]
    return None


def _some(keys, count: int = 8) -> str:
    keys = sorted(keys)
    return f"{keys[:count]}{' ...' if len(keys) > count else ''}"


def _unsupported(keys: list[str], layout: str, source: str = "The state dict") -> CheckpointError:
    hint = (
        " Layer scale (`gamma_*`), cosine attention (`attn.scale`), learnable position tables (`pos_embed`) and "
        "class tokens have no counterpart in transformers' VideoMAEModel; VideoMAEv2's fine-tuned and distilled ViTs "
        "(e.g. vit_b_k710_dl_from_giant.pth) have none of them."
    )
    return CheckpointError(f"{source} has keys with no {layout} counterpart ({len(keys)}): {_some(keys)}.{hint}")


def _transformers_names(name: str) -> tuple[str, ...] | None:
    """The `VideoMAEModel` keys of one VideoMAEv2 key: none for a head key, three for a fused qkv weight, `None`
    for a key with no counterpart."""
    if name.startswith(HEAD_PREFIXES):
        return ()
    block = _V2_BLOCK.fullmatch(name)
    if block is None:
        target = _rename(name, _TOP_KEYS, False)
        return None if target is None else (target,)
    prefix = f"encoder.layer.{block.group(1)}."
    if block.group(2) == "attn.qkv.weight":
        return tuple(f"{prefix}attention.attention.{part}.weight" for part in _QKV)
    target = _rename(block.group(2), _BLOCK_KEYS, False)
    return None if target is None else (prefix + target,)


def _unknown_keys(state_dict: dict) -> list[str]:
    return [name for name in state_dict if _transformers_names(name) is None]


def videomaev2_to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps a VideoMAEv2 fine-tuning state dict to `VideoMAEModel` keys, splitting each block's fused qkv.

    Args:
        state_dict (`dict[str, torch.Tensor]`): VideoMAEv2 keys (`patch_embed.proj.*`, `blocks.{i}.*`, and the
            dropped `fc_norm.*`, `head.*`).

    Returns:
        `dict[str, torch.Tensor]`: transformers keys; every backbone tensor is kept as is (no copy, no cast).

    Raises:
        `CheckpointError`: for keys with no counterpart.
    """
    unknown = _unknown_keys(state_dict)
    if unknown:
        raise _unsupported(unknown, "transformers VideoMAE")
    converted = {}
    for name, tensor in state_dict.items():
        targets = _transformers_names(name)
        converted.update(zip(targets, tensor.chunk(3, dim=0) if len(targets) == 3 else (tensor,)))
    return converted


def transformers_to_videomaev2(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `videomaev2_to_transformers` (head keys excluded): fuses q, k, v back into qkv."""
    converted, qkv, unknown = {}, {}, []
    for name, tensor in state_dict.items():
        block = _HF_BLOCK.fullmatch(name)
        part = re.fullmatch(r"attention\.attention\.(query|key|value)\.weight", block.group(2)) if block else None
        if part:
            qkv.setdefault(block.group(1), {})[part.group(1)] = tensor
            continue
        target = _rename(block.group(2), _BLOCK_KEYS, True) if block else _rename(name, _TOP_KEYS, True)
        if target is None:
            unknown.append(name)
        else:
            converted[f"blocks.{block.group(1)}.{target}" if block else target] = tensor
    if unknown:
        raise _unsupported(unknown, "VideoMAEv2")
    for index, parts in qkv.items():
        converted[f"blocks.{index}.attn.qkv.weight"] = torch.cat([parts[p] for p in _QKV], dim=0)
    return converted


def _reason(err: Exception) -> str:
    """One line on why `torch.load` or `safe_open` could not read a file."""
    pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    if pickled:
        return f"it holds a pickled {pickled.group(1)}, which is not unpickled as that could run code"
    first = str(err).strip().split("\n")[0].split(". ")[0]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _read(path: Path, shapes_only: bool):
    """What a checkpoint file holds; with `shapes_only`, a safetensors file gives meta tensors from its header."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            if shapes_only:
                return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
            return {k: f.get_tensor(k) for k in f.keys()}
    # A file of the legacy format (not a zip archive) cannot be memory-mapped: it is then read whole.
    return torch.load(path, map_location="cpu", weights_only=True, mmap=shapes_only and zipfile.is_zipfile(path))


def _check_layout(name: str, state) -> None:
    """Refuses what is not the state dict of a VideoMAEv2 video ViT (`models/modeling_finetune.py`)."""
    if not isinstance(state, dict):
        raise CheckpointError(
            f"`name_or_path={name!r}` holds a {type(state).__name__}, not a state dict; give a VideoMAEv2 "
            "checkpoint (a dict of tensors, possibly under 'module' or 'model')."
        )
    absent = [
        f"{dim}-D {key}"
        for key, dim in _SIZE_KEYS.items()
        if not (isinstance(state.get(key), torch.Tensor) and state[key].dim() == dim)
    ]
    if absent:
        raise CheckpointError(
            f"`name_or_path={name!r}` is not a VideoMAEv2 video ViT checkpoint: it has no {' and no '.join(absent)} "
            f"(its keys: {_some(state)}). Give one of VideoMAEv2's fine-tuned or distilled ViTs, e.g. "
            "vit_b_k710_dl_from_giant.pth; a transformers checkpoint (a folder with config.json) needs no conversion."
        )
    unknown = [key for key, value in state.items() if not isinstance(value, torch.Tensor)] + _unknown_keys(state)
    if unknown:
        raise _unsupported(sorted(set(unknown)), "transformers VideoMAE", f"`name_or_path={name!r}`")


def load_videomaev2_state_dict(
    name_or_path: str | os.PathLike, *, shapes_only: bool = False
) -> dict[str, torch.Tensor]:
    """Reads a VideoMAEv2 checkpoint file safely (`.safetensors`, or `torch.load(weights_only=True)`).

    The state dict may sit under "module" or "model" (as the released files have it) and its keys may carry a
    `module.` prefix left by DistributedDataParallel.

    Args:
        name_or_path (`str` or `os.PathLike`): the checkpoint file (`load_teacher`'s `name_or_path`).
        shapes_only (`bool`, defaults to `False`): return meta tensors with the checkpoint's names and shapes, reading
            no weight (the file is memory-mapped, or only its safetensors header is read), for `videomaev2_config`.

    Raises:
        `CheckpointError`: for a path that is not a file, a file that cannot be read safely (truncated, not a
            checkpoint, or holding pickled objects besides tensors), or a state dict that is not a VideoMAEv2 ViT's.
    """
    name, path = os.fspath(name_or_path), Path(name_or_path)
    if not path.is_file():
        raise CheckpointError(
            f"`name_or_path={name!r}` is {'a folder' if path.is_dir() else 'not an existing file'}; give a VideoMAEv2 "
            "checkpoint file (.pth, .pt, .bin or .safetensors)."
        )
    try:
        state = _read(path, shapes_only)
    except _UNREADABLE as err:
        raise CheckpointError(
            f"`name_or_path={name!r}` cannot be read as a checkpoint ({_reason(err)}): download it again if it is "
            "truncated, or check that it is the checkpoint you meant; one that holds Python objects besides tensors "
            "is not unpickled, as that could run code (if you trust it, save its state dict alone, e.g. with "
            "`torch.save({'module': state_dict}, path)` or as .safetensors)."
        ) from err
    if isinstance(state, dict):
        wrapped = [state[key] for key in ("module", "model", "state_dict") if isinstance(state.get(key), dict)]
        state = {str(key).removeprefix("module."): value for key, value in (wrapped[0] if wrapped else state).items()}
    _check_layout(name, state)
    if shapes_only:
        state = {key: torch.empty_like(tensor, device="meta") for key, tensor in state.items()}
    return state


def videomaev2_config(
    state_dict: dict[str, torch.Tensor],
    *,
    num_attention_heads: int | None = None,
    image_size: int = 224,
    num_frames: int = 16,
):
    """The `VideoMAEConfig` of a VideoMAEv2 state dict (sizes read from the weights).

    Args:
        state_dict (`dict[str, torch.Tensor]`): VideoMAEv2 keys.
        num_attention_heads (`int`, *optional*): heads per block, which the weights do not show; defaults to
            `hidden_size // 64` (12 for ViT-B, 16 for ViT-L; ViT-g/14 has 16 heads of 88 and needs it passed).
        image_size (`int`, defaults to 224): training resolution, which fixes the native position grid.
        num_frames (`int`, defaults to 16): training frames, which fix the native position grid.

    Raises:
        `ModelLayoutError`: for heads that do not divide the hidden size.
        `GridError`: for an `image_size` or `num_frames` that is not a multiple of the patch or tubelet.
    """
    from transformers import VideoMAEConfig

    patch = state_dict["patch_embed.proj.weight"]  # (C, 3, Pt, P, P)
    hidden_size, num_channels, tubelet_size, patch_size = patch.shape[:4]
    heads = hidden_size // 64 if num_attention_heads is None else num_attention_heads
    if heads < 1 or hidden_size % heads:
        raise ModelLayoutError(
            f"`num_attention_heads={num_attention_heads}` gives {heads} heads"
            f"{' (hidden size // 64)' if num_attention_heads is None else ''}, which do not divide the checkpoint's "
            f"hidden size {hidden_size}: pass the number of heads it was trained with, a divisor of {hidden_size} "
            "(VideoMAEv2's ViT-S, B and L have heads 64 wide; ViT-g/14 has 16 heads of 88)."
        )
    for argument, value, step, kind in (
        ("image_size", image_size, patch_size, "resolution, a multiple of its patch"),
        ("num_frames", num_frames, tubelet_size, "frames, a multiple of its tubelet"),
    ):
        if value < step or value % step:
            raise GridError(
                f"`{argument}={value}` must be the checkpoint's training {kind} {step} (use "
                f"{multiples_near(value, step)}; VideoMAEv2's ViTs were trained on 16 frames at 224x224)."
            )
    depth = 1 + max(int(m.group(1)) for m in map(_V2_BLOCK.fullmatch, state_dict) if m)
    return VideoMAEConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=num_channels,
        num_frames=num_frames,
        tubelet_size=tubelet_size,
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        hidden_act="gelu",
        qv_bias="blocks.0.attn.q_bias" in state_dict,
        layer_norm_eps=1e-6,
        use_mean_pooling=True,
    )


def _loading_info(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """`given` against a model's `expected` state dict, as transformers' `output_loading_info` reports it."""
    return {
        "missing_keys": sorted(expected.keys() - given.keys()),
        "unexpected_keys": sorted(given.keys() - expected.keys()),
        "mismatched_keys": sorted(k for k in expected.keys() & given.keys() if expected[k].shape != given[k].shape),
    }


def read_videomaev2(name_or_path: str | os.PathLike, *, shapes_only: bool = False, **config_options):
    """The `VideoMAEModel` weights and config of a VideoMAEv2 checkpoint file, checked to fill the model exactly.

    Args:
        name_or_path (`str` or `os.PathLike`): the checkpoint file.
        shapes_only (`bool`, defaults to `False`): read no weight (see `load_videomaev2_state_dict`); the weights
            returned are then meta tensors.
        **config_options: passed to `videomaev2_config` (`num_attention_heads`, `image_size`, `num_frames`).

    Returns:
        `tuple[dict[str, torch.Tensor], transformers.VideoMAEConfig]`: transformers keys, and the config.

    Raises:
        `CheckpointError`: see `load_videomaev2_state_dict`; also for blocks that are incomplete or of other sizes.
        `UsageError`: see `videomaev2_config`.
    """
    from transformers import VideoMAEModel

    state = load_videomaev2_state_dict(name_or_path, shapes_only=shapes_only)
    config = videomaev2_config(state, **config_options)
    weights = videomaev2_to_transformers(state)
    with torch.device("meta"):
        expected = VideoMAEModel(config).state_dict()
    check_weights(
        os.fspath(name_or_path),
        _loading_info(expected, weights),
        fix="Every block of a VideoMAEv2 ViT is complete and of one size: download the checkpoint again, or check "
        "that it is the file you meant.",
    )
    return weights, config


def convert_videomaev2(name_or_path: str | os.PathLike, **config_options):
    """Builds a transformers `VideoMAEModel` (no final norm) from a VideoMAEv2 checkpoint file.

    Args:
        name_or_path (`str` or `os.PathLike`): the checkpoint (`.pth`, `.pt`, `.bin` or `.safetensors`).
        **config_options: passed to `videomaev2_config` (`num_attention_heads`, `image_size`, `num_frames`).

    Raises:
        `UsageError`: see `read_videomaev2`.
    """
    from transformers import VideoMAEModel

    weights, config = read_videomaev2(name_or_path, **config_options)
    model = VideoMAEModel(config)
    model.load_state_dict(weights, strict=True)
    return model.eval()
