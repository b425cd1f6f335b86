"""A tiny Kandinsky 5.0 Video pipeline (`Kandinsky5T2VPipeline`) built in code, for the tests (no download).

It keeps the real T2V checkpoints' shape rules at a CPU scale: the HunyuanVideo VAE (x8 in space, x4 in time, 4
channels here), a transformer with patch 1 x 2 x 2 and `visual_cond` (as the released T2V checkpoints), one text
block and two visual blocks, and both text encoders: a tiny Qwen2.5-VL (text and vision towers) and a tiny CLIP text
model, over the shared word-level tokenizer (`text.tiny_tokenizer`, with which the pipeline's template and a prompt's
first word fill the 128 tokens the pipeline drops, so the embeddings start at the second word). A 9-frame 32x48 clip
gives latents 3 x 4 x 6 and student tokens 3 x 2 x 3; the tiny VideoMAE teacher at 32x48 returns a 4 x 2 x 3 grid.
"""

from __future__ import annotations

import torch

from .text import tiny_tokenizer


TINY_KANDINSKY5_NUM_FRAMES = 9
TINY_KANDINSKY5_HEIGHT = 32
TINY_KANDINSKY5_WIDTH = 48
TINY_KANDINSKY5_QWEN_DIM = 32
TINY_KANDINSKY5_CLIP_DIM = 16


def tiny_qwen2_5_vl(tokenizer, seed: int = 0):
    """A tiny `Qwen2_5_VLForConditionalGeneration` over `tokenizer`'s vocabulary: 2 text layers 32 wide (4 heads,
    2 key-value heads, multimodal RoPE sections 1 + 1 + 2), a one-block vision tower."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    pad = tokenizer.pad_token_id
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": TINY_KANDINSKY5_QWEN_DIM,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128 + 1024,  # the template's dropped tokens + the pipeline's longest text
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            "bos_token_id": pad,
            "eos_token_id": pad,
            "pad_token_id": pad,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": TINY_KANDINSKY5_QWEN_DIM,
            "fullatt_block_indexes": [0],
        },
        bos_token_id=pad,
        eos_token_id=pad,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_clip_text_model(tokenizer, seed: int = 0):
    """A tiny `CLIPTextModel` over `tokenizer`'s vocabulary, one layer 16 wide; its pooled output is the state at the
    first padding token (its `eos_token_id`), the position of CLIP's end token after the words."""
    from transformers import CLIPTextConfig, CLIPTextModel

    pad = tokenizer.pad_token_id
    torch.manual_seed(seed)
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TINY_KANDINSKY5_CLIP_DIM,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=TINY_KANDINSKY5_CLIP_DIM,
            bos_token_id=pad,
            eos_token_id=pad,
            pad_token_id=pad,
        )
    ).eval()


def tiny_kandinsky5_components(seed: int = 0) -> dict:
    """Components of a tiny `Kandinsky5T2VPipeline` (about 0.6 MB), deterministic for a given seed.

    The VAE's `scaling_factor` is the real one (0.476986), so that the latent scaling is exercised.

    Args:
        seed (`int`, defaults to 0): seed of the random initialisation.

    Returns:
        `dict`: `tokenizer`, `text_encoder`, `tokenizer_2`, `text_encoder_2`, `vae`, `transformer` and `scheduler`,
        ready for `Kandinsky5T2VPipeline(**components)`.
    """
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, Kandinsky5Transformer3DModel

    latent_channels = 4
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = Kandinsky5Transformer3DModel(
        in_visual_dim=latent_channels,
        out_visual_dim=latent_channels,
        in_text_dim=TINY_KANDINSKY5_QWEN_DIM,
        in_text_dim2=TINY_KANDINSKY5_CLIP_DIM,
        time_dim=16,
        patch_size=(1, 2, 2),
        model_dim=32,
        ff_dim=64,
        num_text_blocks=1,
        num_visual_blocks=2,
        axes_dims=(4, 6, 6),
        visual_cond=True,
    )
    # The modulations start at zero (so every block starts as the identity); random ones make the tiny model's
    # blocks, and its LoRA, do something from the first step.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "modulation" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=latent_channels,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=False,
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": tiny_qwen2_5_vl(tokenizer, seed),
        "tokenizer_2": tiny_tokenizer(),
        "text_encoder_2": tiny_clip_text_model(tokenizer, seed),
        "vae": vae,
        "transformer": transformer,
        # Kandinsky 5's own sampler: flow-matching Euler, shifted.
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0),
    }
