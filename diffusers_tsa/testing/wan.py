"""Tiny, randomly initialised Wan 2.1 / 2.2 pipelines built in code, for the tests (no download).

Their shapes follow the real checkpoints' rules at a CPU scale: a 9-frame 64x96 clip gives Wan 2.1 latents of
3 x 8 x 12 (VAE x8 in space, x4 in time) and student tokens 3 x 4 x 6 (patch 1 x 2 x 2); the tiny VideoMAE teacher
(`diffusers_tsa.testing.tiny_videomae`) sees 8 frames at 32x48 and returns a 4 x 2 x 3 grid, so the projector drops
the first latent frame, doubles time and halves space. The Wan 2.2 TI2V-5B kind has the residual VAE that patchifies
its input (x16 in space, 48 channels in the real model) and per-token timesteps (`expand_timesteps`).
"""

from __future__ import annotations

import torch

from .text import tiny_text_encoder, tiny_tokenizer


TINY_WAN_NUM_FRAMES = 9
TINY_WAN_HEIGHT = 64
TINY_WAN_WIDTH = 96
TINY_WAN_TEXT_DIM = 32
TINY_WAN_LATENT_CHANNELS = 8
#: Wan 2.2 A14B's T2V boundary: `transformer` (high noise) takes t >= 875, `transformer_2` (low noise) the rest.
TINY_WAN_BOUNDARY_RATIO = 0.875


def tiny_wan_transformer(seed: int = 0, *, in_channels: int = TINY_WAN_LATENT_CHANNELS, num_layers: int = 2):
    """A tiny `WanTransformer3DModel`: 2 heads of 8 (width 16), patch 1 x 2 x 2, `num_layers` blocks."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        out_channels=in_channels,
        text_dim=TINY_WAN_TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def tiny_wan_vae(seed: int = 0, *, ti2v: bool = False):
    """A tiny `AutoencoderKLWan` with non-trivial `latents_mean` / `latents_std` (so that normalisation shows).

    Wan 2.1's VAE (x8 in space, x4 in time), or with `ti2v=True` Wan 2.2's residual one, which patchifies its input
    2 x 2 first (x16 in space).
    """
    from diffusers import AutoencoderKLWan

    channels = TINY_WAN_LATENT_CHANNELS
    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=channels,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1 * (c - channels / 2) for c in range(channels)],
        latents_std=[1.0 + 0.25 * c for c in range(channels)],
        **(
            {"in_channels": 12, "out_channels": 12, "is_residual": True, "patch_size": 2, "scale_factor_spatial": 16}
            if ti2v
            else {}
        ),
    )


def tiny_wan_components(seed: int = 0, *, two_experts: bool = False, ti2v: bool = False) -> dict:
    """Components of a tiny `WanPipeline` (about 0.1 MB), deterministic for a given seed.

    Args:
        seed (`int`, defaults to 0): seed of the random initialisation.
        two_experts (`bool`, defaults to `False`): a Wan 2.2 A14B-like pipeline: `transformer` (high noise) and
            `transformer_2` (low noise, initialised from `seed + 1`) split at `TINY_WAN_BOUNDARY_RATIO`.
        ti2v (`bool`, defaults to `False`): a Wan 2.2 TI2V-5B-like pipeline: the x16 residual VAE and
            `expand_timesteps=True`.

    Returns:
        `dict`: `tokenizer`, `text_encoder`, `vae`, `transformer`, `transformer_2`, `scheduler`, `boundary_ratio`
        and `expand_timesteps`, ready for `WanPipeline(**components)`.
    """
    from diffusers import UniPCMultistepScheduler

    tokenizer = tiny_tokenizer()
    return {
        "tokenizer": tokenizer,
        "text_encoder": tiny_text_encoder(tokenizer, seed=seed, width=TINY_WAN_TEXT_DIM, umt5=True),
        "vae": tiny_wan_vae(seed, ti2v=ti2v),
        "transformer": tiny_wan_transformer(seed),
        "transformer_2": tiny_wan_transformer(seed + 1) if two_experts else None,
        # Wan 2.1's own sampler: UniPC on flow-matching sigmas, shifted.
        "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        "boundary_ratio": TINY_WAN_BOUNDARY_RATIO if two_experts else None,
        "expand_timesteps": ti2v,
    }
