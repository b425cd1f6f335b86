"""A tiny LTX-2 pipeline built in code, for the tests and quick tries of the LTX-2 family on a CPU.

It keeps LTX-2's shape rules at a scale that runs in seconds: a video VAE that compresses 32x in space and 8x in
time (LTX-2's layout: patch 4, then spatial, temporal and two spatio-temporal downsamplings), a transformer with
patch 1 and an audio stream, text connectors with 4 learnable registers (text lengths are multiples of 4), an audio
VAE and a vocoder, and a Gemma 3 text encoder of 2 layers. A 9-frame 64x96 clip gives latents and student tokens
2 x 2 x 3 (and 9 audio latent frames at 24 fps); the tiny VideoMAE teacher (`tiny_videomae()`) sees its 8 frames
after the first at 32x48 and returns a 4 x 2 x 3 grid.
"""

from __future__ import annotations

import torch

from .text import tiny_tokenizer


TINY_LTX2_NUM_FRAMES = 9
TINY_LTX2_HEIGHT = 64
TINY_LTX2_WIDTH = 96
#: Width of the tiny Gemma's hidden states (the connectors' and the transformer's caption width).
TINY_GEMMA_WIDTH = 16


def tiny_gemma3(tokenizer, *, seed: int = 0):
    """A tiny `Gemma3ForConditionalGeneration` over `tokenizer`'s vocabulary (2 text layers `TINY_GEMMA_WIDTH` wide,
    a 1-layer vision tower the text-to-video pipeline never runs)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_GEMMA_WIDTH,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=8,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = SiglipVisionConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=8, patch_size=4
    )
    torch.manual_seed(seed)
    return Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4))


def tiny_ltx2_components(seed: int = 0, *, num_layers: int = 2) -> dict:
    """Components of a tiny `LTX2Pipeline` (about 1.5 MB), deterministic for a given seed.

    The video VAE's `latents_mean` and `latents_std` are not the identity, so that the latent normalisation is
    exercised.

    Args:
        seed (`int`, defaults to 0): seed of the random initialisation.
        num_layers (`int`, defaults to 2): transformer blocks.

    Returns:
        `dict`: `scheduler`, `vae`, `audio_vae`, `text_encoder`, `tokenizer`, `connectors`, `transformer` and
        `vocoder`, ready for `LTX2Pipeline(**components)`.
    """
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder

    latent_channels, audio_channels, mel_bins = 8, 2, 16  # audio tokens: 2 channels x 16 / 4 latent mel bins
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=audio_channels * mel_bins // 4,
        audio_out_channels=audio_channels * mel_bins // 4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=num_layers,
        caption_channels=TINY_GEMMA_WIDTH,
    )
    torch.manual_seed(seed)
    connectors = LTX2TextConnectors(
        caption_channels=TINY_GEMMA_WIDTH,
        text_proj_in_factor=3,  # Gemma's 2 layers and its embeddings
        video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=4,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=4,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLLTX2Video(
        latent_channels=latent_channels,
        block_out_channels=(4, 8, 16, 32),
        decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        decoder_causal=False,
        spatial_compression_ratio=32,  # as LTX-2's config states them
        temporal_compression_ratio=8,
    )
    generator = torch.Generator().manual_seed(seed)
    vae.latents_mean.copy_(torch.rand(latent_channels, generator=generator) - 0.5)
    vae.latents_std.copy_(torch.rand(latent_channels, generator=generator) + 0.5)
    torch.manual_seed(seed)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=audio_channels * mel_bins // 4,
        ch_mult=(1, 2, 4),
        num_res_blocks=1,
        latent_channels=audio_channels,
        mel_bins=mel_bins,
        resolution=mel_bins,
    )
    vocoder = LTX2Vocoder(
        in_channels=2 * mel_bins,  # stereo mel spectrograms
        hidden_channels=8,
        upsample_kernel_sizes=[4, 4],
        upsample_factors=[2, 2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1]],
    )
    # LTX-2's own scheduler settings (resolution-dependent shift of the sampling sigmas).
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    return {
        "scheduler": scheduler,
        "vae": vae,
        "audio_vae": audio_vae,
        "text_encoder": tiny_gemma3(tokenizer, seed=seed),
        "tokenizer": tokenizer,
        "connectors": connectors,
        "transformer": transformer,
        "vocoder": vocoder,
    }
