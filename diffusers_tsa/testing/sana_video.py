"""A tiny, randomly initialised Sana-Video text-to-video pipeline built in code, for the tests (no download).

Its shapes follow the real checkpoint's rules at a CPU scale: a 9-frame 32x64 clip (sides multiples of 32, as the
pipeline wants) gives latents of 3 x 4 x 8 through the tiny Wan 2.1 VAE (`tiny_wan_vae`: x8 in space, x4 in time,
non-trivial `latents_mean` / `latents_std`) and student tokens 3 x 2 x 4 (patch 1 x 2 x 2); the tiny VideoMAE teacher
sees 8 frames at 32x48 and returns a 4 x 2 x 3 grid. The text encoder is a tiny Gemma 2 over the shared word-level
tokenizer (the complex human instruction's words outside its vocabulary become <unk>).
"""

from __future__ import annotations

import torch

from .text import TINY_TEXT_EMBED_DIM, tiny_tokenizer
from .wan import TINY_WAN_LATENT_CHANNELS, tiny_wan_vae


TINY_SANA_VIDEO_NUM_FRAMES = 9
TINY_SANA_VIDEO_HEIGHT = 32
TINY_SANA_VIDEO_WIDTH = 64


def tiny_sana_video_transformer(seed: int = 0, *, num_layers: int = 2):
    """A tiny `SanaVideoTransformer3DModel`: 2 heads of 8 (width 16) for self- and cross-attention, patch 1 x 2 x 2,
    `num_layers` blocks."""
    from diffusers import SanaVideoTransformer3DModel

    torch.manual_seed(seed)
    return SanaVideoTransformer3DModel(
        in_channels=TINY_WAN_LATENT_CHANNELS,
        out_channels=TINY_WAN_LATENT_CHANNELS,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=num_layers,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=TINY_TEXT_EMBED_DIM,
        sample_size=8,
        patch_size=(1, 2, 2),
        rope_max_seq_len=32,
    )


def tiny_sana_video_components(seed: int = 0) -> dict:
    """Components of a tiny `SanaVideoPipeline`, deterministic for a given seed.

    Returns:
        `dict`: `tokenizer`, `text_encoder` (Gemma 2), `vae` (Wan 2.1's), `transformer` and `scheduler` (a flow
        DPM-Solver, as the released checkpoints'), ready for `SanaVideoPipeline(**components)`.
    """
    from diffusers import DPMSolverMultistepScheduler
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tokenizer),
            hidden_size=TINY_TEXT_EMBED_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": tiny_wan_vae(seed),
        "transformer": tiny_sana_video_transformer(seed),
        "scheduler": DPMSolverMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0
        ),
    }
