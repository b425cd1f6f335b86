"""Tiny, randomly initialised Wan 2.1 / 2.2 pipelines built in code, for the tests (no download).

Their shapes follow the real checkpoints' rules at a CPU scale: a 9-frame 64x96 clip gives Wan 2.1 latents of
3 x 8 x 12 (VAE x8 in space, x4 in time) and student tokens 3 x 4 x 6 (patch 1 x 2 x 2); the tiny VideoMAE teacher
(`diffusers_tsa.testing.tiny_videomae`) sees 8 frames at 32x48 and returns a 4 x 2 x 3 grid, so the projector drops
the first latent frame, doubles time and halves space. The Wan 2.2 TI2V-5B kind has the residual VAE that patchifies
its input (x16 in space, 48 channels in the real model) and per-token timesteps (`expand_timesteps`).

The image-to-video kinds (`image_to_video=True`) are `WanImageToVideoPipeline`'s: Wan 2.1 I2V's transformer takes the
noisy latents, the 4-channel frame mask and the condition latents (2 C + 4 channels in, C out) and a tiny CLIP image
encoder's hidden states; Wan 2.2 A14B I2V's has no image encoder; TI2V-5B's is its text-to-video one.
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
#: Width of the tiny CLIP image encoder's hidden states (Wan 2.1 I2V's `image_dim`).
TINY_WAN_IMAGE_DIM = 16


def tiny_wan_image_encoder(seed: int = 0):
    """A tiny `CLIPVisionModel` (2 layers, width 16, 32x32 images in 8x8 patches: 17 hidden states per image) and
    the `CLIPImageProcessor` that resizes and crops to its size."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=TINY_WAN_IMAGE_DIM,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPVisionModel(config).eval(), processor


def tiny_wan_transformer(
    seed: int = 0,
    *,
    in_channels: int = TINY_WAN_LATENT_CHANNELS,
    num_layers: int = 2,
    image_to_video: bool = False,
    image_dim: int | None = None,
):
    """A tiny `WanTransformer3DModel`: 2 heads of 8 (width 16), patch 1 x 2 x 2, `num_layers` blocks; with
    `image_to_video` an I2V one (`2 in_channels + 4` in: latents, frame mask, condition; `in_channels` out), taking
    image hidden states of width `image_dim` if given (Wan 2.1 I2V)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=2 * in_channels + 4 if image_to_video else in_channels,
        out_channels=in_channels,
        image_dim=image_dim,
        added_kv_proj_dim=16 if image_dim is not None else None,
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


def tiny_wan_components(
    seed: int = 0, *, two_experts: bool = False, ti2v: bool = False, image_to_video: bool = False
) -> dict:
    """Components of a tiny `WanPipeline` (about 0.1 MB), deterministic for a given seed.

    Args:
        seed (`int`, defaults to 0): seed of the random initialisation.
        two_experts (`bool`, defaults to `False`): a Wan 2.2 A14B-like pipeline: `transformer` (high noise) and
            `transformer_2` (low noise, initialised from `seed + 1`) split at `TINY_WAN_BOUNDARY_RATIO`.
        ti2v (`bool`, defaults to `False`): a Wan 2.2 TI2V-5B-like pipeline: the x16 residual VAE and
            `expand_timesteps=True`.
        image_to_video (`bool`, defaults to `False`): `WanImageToVideoPipeline`'s components: Wan 2.1 I2V (with the
            tiny image encoder) alone, Wan 2.2 A14B I2V (no image encoder) with `two_experts`; TI2V-5B (`ti2v`)
            is the same checkpoint for both tasks and gets no image encoder.

    Returns:
        `dict`: `tokenizer`, `text_encoder`, `vae`, `transformer`, `transformer_2`, `scheduler`, `boundary_ratio`
        and `expand_timesteps`, ready for `WanPipeline(**components)`; with `image_to_video` also `image_encoder` and
        `image_processor` (`None` but for Wan 2.1 I2V), for `WanImageToVideoPipeline(**components)`.
    """
    from diffusers import UniPCMultistepScheduler

    tokenizer = tiny_tokenizer()
    concat = image_to_video and not ti2v
    image_dim = TINY_WAN_IMAGE_DIM if concat and not two_experts else None
    image = {}
    if image_to_video:
        encoder, processor = tiny_wan_image_encoder(seed) if image_dim else (None, None)
        image = {"image_encoder": encoder, "image_processor": processor}
    transformer = {"image_to_video": concat, "image_dim": image_dim}
    return {
        **image,
        "tokenizer": tokenizer,
        "text_encoder": tiny_text_encoder(tokenizer, seed=seed, width=TINY_WAN_TEXT_DIM, umt5=True),
        "vae": tiny_wan_vae(seed, ti2v=ti2v),
        "transformer": tiny_wan_transformer(seed, **transformer),
        "transformer_2": tiny_wan_transformer(seed + 1, **transformer) if two_experts else None,
        # Wan 2.1's own sampler: UniPC on flow-matching sigmas, shifted.
        "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        "boundary_ratio": TINY_WAN_BOUNDARY_RATIO if two_experts else None,
        "expand_timesteps": ti2v,
    }
