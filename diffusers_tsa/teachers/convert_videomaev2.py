"""Converts a VideoMAEv2 checkpoint (OpenGVLab's `VisionTransformer` layout) to transformers' `VideoMAEModel`.

The paper's teacher is the distilled ViT-B `vit_b_k710_dl_from_giant.pth` of the `OpenGVLab/VideoMAE2` Hub repository,
a raw state dict under the key "module". Its blocks are transformers' VideoMAE blocks (pre-norm, a fused qkv with
separate q and v biases, LayerNorm eps 1e-6, fixed sinusoidal positions), so the conversion renames keys and splits
qkv; nothing is approximated. The classification head (`fc_norm`, `head`) is not part of the features and is dropped.

Usage:
    python -m diffusers_tsa.teachers.convert_videomaev2 vit_b_k710_dl_from_giant.pth videomaev2-base-distilled
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import torch

# (VideoMAEv2 name, transformers name), per block then top level; qkv is split separately.
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


def _rename(name: str, pairs: tuple[tuple[str, str], ...], reverse: bool) -> str | None:
    for v2, hf in pairs:
        src, dst = (hf, v2) if reverse else (v2, hf)
        if name == src or name.startswith(src + "."):
            return dst + name[len(src) :]
    return None


def _unsupported(keys: list[str], layout: str) -> ValueError:
    hint = (
        " Layer scale (`gamma_*`), cosine attention (`attn.scale`), learnable position tables (`pos_embed`) and "
        "class tokens have no counterpart in transformers' VideoMAEModel."
    )
    return ValueError(f"Keys with no {layout} counterpart: {sorted(keys)[:8]}{' ...' if len(keys) > 8 else ''}.{hint}")


def videomaev2_to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps a VideoMAEv2 fine-tuning state dict to `VideoMAEModel` keys, splitting each block's fused qkv.

    Args:
        state_dict (`dict[str, torch.Tensor]`): VideoMAEv2 keys (`patch_embed.proj.*`, `blocks.{i}.*`, and the
            dropped `fc_norm.*`, `head.*`).

    Returns:
        `dict[str, torch.Tensor]`: transformers keys; every backbone tensor is kept as is (no copy, no cast).
    """
    converted, unknown = {}, []
    for name, tensor in state_dict.items():
        if name.startswith(HEAD_PREFIXES):
            continue
        block = _V2_BLOCK.fullmatch(name)
        if block and block.group(2) == "attn.qkv.weight":
            for part, weight in zip(_QKV, tensor.chunk(3, dim=0)):
                converted[f"encoder.layer.{block.group(1)}.attention.attention.{part}.weight"] = weight
            continue
        target = _rename(block.group(2), _BLOCK_KEYS, False) if block else _rename(name, _TOP_KEYS, False)
        if target is None:
            unknown.append(name)
        else:
            converted[f"encoder.layer.{block.group(1)}.{target}" if block else target] = tensor
    if unknown:
        raise _unsupported(unknown, "transformers VideoMAE")
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


def load_videomaev2_state_dict(path: str | os.PathLike, *, shapes_only: bool = False) -> dict[str, torch.Tensor]:
    """Reads a VideoMAEv2 checkpoint file safely (`.safetensors`, or `torch.load(weights_only=True)`).

    The state dict may sit under "module" or "model" (as the released files have it) and its keys may carry a
    `module.` prefix left by DistributedDataParallel.

    Args:
        path (`str` or `os.PathLike`): the checkpoint file.
        shapes_only (`bool`, defaults to `False`): return meta tensors with the checkpoint's names and shapes, reading
            no weight (the file is memory-mapped, or only its safetensors header is read), for `videomaev2_config`.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            if shapes_only:
                state = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
            else:
                state = {k: f.get_tensor(k) for k in f.keys()}
    else:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=shapes_only)
    for wrapper in ("module", "model", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    state = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    if shapes_only:
        state = {name: torch.empty_like(tensor, device="meta") for name, tensor in state.items()}
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
    """
    from transformers import VideoMAEConfig

    patch = state_dict["patch_embed.proj.weight"]  # (C, 3, Pt, P, P)
    hidden_size, num_channels, tubelet_size, patch_size = patch.shape[:4]
    depth = 1 + max(int(m.group(1)) for m in map(_V2_BLOCK.fullmatch, state_dict) if m)
    return VideoMAEConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=num_channels,
        num_frames=num_frames,
        tubelet_size=tubelet_size,
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        num_attention_heads=num_attention_heads or hidden_size // 64,
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        hidden_act="gelu",
        qv_bias="blocks.0.attn.q_bias" in state_dict,
        layer_norm_eps=1e-6,
        use_mean_pooling=True,
    )


def convert_videomaev2(path: str | os.PathLike, **config_options):
    """Builds a transformers `VideoMAEModel` (no final norm) from a VideoMAEv2 checkpoint file.

    Args:
        path (`str` or `os.PathLike`): the checkpoint (`.pth`, `.pt`, `.bin` or `.safetensors`).
        **config_options: passed to `videomaev2_config` (`num_attention_heads`, `image_size`, `num_frames`).
    """
    from transformers import VideoMAEModel

    state = load_videomaev2_state_dict(path)
    model = VideoMAEModel(videomaev2_config(state, **config_options))
    model.load_state_dict(videomaev2_to_transformers(state), strict=True)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="VideoMAEv2 checkpoint, e.g. vit_b_k710_dl_from_giant.pth.")
    parser.add_argument("dst", help="Output folder (config.json + model.safetensors), for `--teacher`.")
    parser.add_argument("--num_attention_heads", type=int, default=None, help="Default: hidden size // 64.")
    parser.add_argument("--image_size", type=int, default=224, help="Training resolution (default 224).")
    parser.add_argument("--num_frames", type=int, default=16, help="Training frames (default 16).")
    args = parser.parse_args(argv)
    model = convert_videomaev2(
        args.src, num_attention_heads=args.num_attention_heads, image_size=args.image_size, num_frames=args.num_frames
    )
    model.save_pretrained(args.dst)
    print(f"Wrote {args.dst} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters).")


if __name__ == "__main__":
    main()
