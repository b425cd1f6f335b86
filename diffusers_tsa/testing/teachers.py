"""Tiny, randomly initialised teachers (VideoMAE, DINOv2, V-JEPA 2) whose grids match the tiny students' clips."""

from __future__ import annotations

import torch

from .cogvideox import TINY_HEIGHT, TINY_NUM_FRAMES, TINY_WIDTH


def tiny_videomae(
    *,
    image_size: tuple[int, int] = (TINY_HEIGHT // 3, TINY_WIDTH // 3),
    num_frames: int = TINY_NUM_FRAMES - 1,
    patch_size: int = 16,
    tubelet_size: int = 2,
    hidden_size: int = 32,
    seed: int = 0,
):
    """A tiny `transformers.VideoMAEModel` teacher (no final norm, as VideoREPA reads its features).

    With the defaults it sees 8 frames at 32x48 and returns a 4 x 2 x 3 token grid of width 32.
    """
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(seed)
    config = VideoMAEConfig(
        image_size=list(image_size),
        patch_size=patch_size,
        tubelet_size=tubelet_size,
        num_frames=num_frames,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        use_mean_pooling=True,
    )
    return VideoMAEModel(config).eval()


def tiny_dinov2(*, num_register_tokens: int = 0, patch_size: int = 14, hidden_size: int = 32, seed: int = 0):
    """A tiny `transformers.Dinov2Model` image teacher (`Dinov2WithRegistersModel` with `num_register_tokens`):
    2 blocks of 2 heads, native size 56x56. Run frame by frame on the tiny clip, it sees 8 frames at 28x42, a
    8 x 2 x 3 grid (tubelet 1 x 14 x 14), as DINOv2 sees a 49-frame 480x720 clip as 48 x 11 x 17."""
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = {
        "hidden_size": hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "mlp_ratio": 2,
        "patch_size": patch_size,
        "image_size": 4 * patch_size,
    }
    torch.manual_seed(seed)
    if num_register_tokens:
        return Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(num_register_tokens=num_register_tokens, **config)
        ).eval()
    return Dinov2Model(Dinov2Config(**config)).eval()


def tiny_vjepa2(
    *,
    crop_size: int = TINY_HEIGHT // 3,
    frames_per_clip: int = TINY_NUM_FRAMES - 1,
    hidden_size: int = 48,
    seed: int = 0,
):
    """A tiny `transformers.VJEPA2Model` (patch 16, tubelet 2, 2 heads of 24, a 1-block predictor).

    Its RoPE splits each head into three 8-wide (frame, row, column) parts; with the defaults the stock model sees
    8 frames at 32x32 as a 4 x 2 x 2 grid.
    """
    from transformers import VJEPA2Config, VJEPA2Model

    torch.manual_seed(seed)
    config = VJEPA2Config(
        crop_size=crop_size,
        frames_per_clip=frames_per_clip,
        patch_size=16,
        tubelet_size=2,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2.0,
        pred_hidden_size=32,
        pred_num_hidden_layers=1,
        pred_num_attention_heads=2,
        pred_num_mask_tokens=2,
    )
    return VJEPA2Model(config).eval()
