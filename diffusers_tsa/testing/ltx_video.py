"""A tiny LTX-Video pipeline built in code, for the tests and quick tries of the LTX-Video family on a CPU.

It keeps the real 0.9.x checkpoints' shape rules at a scale that runs in seconds: a VAE that compresses 32x in space
and 8x in time (patch 4, three spatio-temporal downsamplings), a transformer with patch 1, a T5 text encoder. A
9-frame 64x96 clip gives latents and student tokens 2 x 2 x 3; the tiny VideoMAE teacher (`tiny_videomae()`) sees
its 8 frames after the first at 32x48 and returns a 4 x 2 x 3 grid (time x4 after latent frame 0, as the projector
resamples it).
"""

from __future__ import annotations

import torch

from .text import TINY_TEXT_EMBED_DIM, tiny_text_encoder, tiny_tokenizer


TINY_LTX_NUM_FRAMES = 9
TINY_LTX_HEIGHT = 64
TINY_LTX_WIDTH = 96


def tiny_ltx_video_components(seed: int = 0, *, num_layers: int = 2) -> dict:
    """Components of a tiny `LTXPipeline` (about 0.3 MB), deterministic for a given seed.

    The VAE's `latents_mean` and `latents_std` are not the identity (as in LTX-Video 0.9.1 and later), so that the
    latent normalisation is exercised.

    Args:
        seed (`int`, defaults to 0): seed of the random initialisation.
        num_layers (`int`, defaults to 2): transformer blocks.

    Returns:
        `dict`: `tokenizer`, `text_encoder`, `vae`, `transformer` and `scheduler`, ready for
        `LTXPipeline(**components)`.
    """
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    latent_channels = 8
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=latent_channels,
        out_channels=latent_channels,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=num_layers,
        caption_channels=TINY_TEXT_EMBED_DIM,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        latent_channels=latent_channels,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        patch_size=4,
        patch_size_t=1,
    )
    generator = torch.Generator().manual_seed(seed)
    vae.latents_mean.copy_(torch.rand(latent_channels, generator=generator) - 0.5)
    vae.latents_std.copy_(torch.rand(latent_channels, generator=generator) + 0.5)
    text_encoder = tiny_text_encoder(tokenizer, seed=seed)
    # LTX-Video's own scheduler settings (resolution-dependent shift of the sampling sigmas).
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "transformer": transformer,
        "scheduler": scheduler,
    }
