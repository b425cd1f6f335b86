"""A tiny, randomly initialised HunyuanVideo 1.5 text-to-video (or image-to-video) pipeline built in code, for the tests (no download).

Its shapes follow the real checkpoint's rules at a CPU scale: a 9-frame 32x48 clip gives latents of 3 x 2 x 3 (VAE
x16 in space, x4 in time) and as many student tokens (patch 1); the tiny VideoMAE teacher sees 8 frames at 32x48 and
returns a 4 x 2 x 3 grid. The clips are small because the VAE's full-resolution 3D convolutions are what costs. Both text encoders are tiny: a Qwen2.5-VL text model over the shared word-level tokenizer
(with a chat template) and a ByT5 encoder over diffusers' byte-level `ByT5Tokenizer`. The ByT5 projection's 2048
hidden width is fixed by the transformer's code (about 4M of its weights).
"""

from __future__ import annotations

import torch

from .text import tiny_tokenizer


TINY_HUNYUAN_NUM_FRAMES = 9
TINY_HUNYUAN_HEIGHT = 32
TINY_HUNYUAN_WIDTH = 48
TINY_HUNYUAN_LATENT_CHANNELS = 4
TINY_HUNYUAN_TEXT_DIM = 32
TINY_HUNYUAN_GLYPH_DIM = 16
#: A chat template for the tiny tokenizer that, as the real Qwen2.5-VL one with the pipeline's system message, puts
#: exactly the 108 tokens the pipeline crops (`prompt_template_encode_start_idx`) before the caption: here 108 dots.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '. ' * 108 }}"
    "{% else %}{{ message['content'] }}{% endif %}{% endfor %}"
)


#: The tiny image-to-video transformer's `target_size`: its pipeline's size buckets include the tiny 32x48 clips.
TINY_HUNYUAN_I2V_TARGET_SIZE = 48
#: SigLIP's width in the tiny image-to-video pipeline (the transformer's `image_embed_dim`).
TINY_HUNYUAN_IMAGE_DIM = 8


def tiny_hunyuan_video15_transformer(seed: int = 0, *, num_layers: int = 2, image_to_video: bool = False):
    """A tiny `HunyuanVideo15Transformer3DModel` for text-to-video (or image-to-video: `task_type="i2v"` and a
    `target_size` whose buckets include 32x48): 2 heads of 8 (width 16), patch 1, `num_layers` dual-stream blocks and
    one token-refiner block."""
    from diffusers import HunyuanVideo15Transformer3DModel

    channels = TINY_HUNYUAN_LATENT_CHANNELS
    torch.manual_seed(seed)
    return HunyuanVideo15Transformer3DModel(
        in_channels=2 * channels + 1,
        out_channels=channels,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=num_layers,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        text_embed_dim=TINY_HUNYUAN_TEXT_DIM,
        text_embed_2_dim=TINY_HUNYUAN_GLYPH_DIM,
        image_embed_dim=TINY_HUNYUAN_IMAGE_DIM,
        rope_axes_dim=(2, 2, 4),
        target_size=TINY_HUNYUAN_I2V_TARGET_SIZE if image_to_video else 64,
        task_type="i2v" if image_to_video else "t2v",
    )


def tiny_hunyuan_video15_vae(seed: int = 0):
    """A tiny `AutoencoderKLHunyuanVideo15` (x16 in space, x4 in time) with a scaling factor that shows."""
    from diffusers import AutoencoderKLHunyuanVideo15

    torch.manual_seed(seed)
    return AutoencoderKLHunyuanVideo15(
        latent_channels=TINY_HUNYUAN_LATENT_CHANNELS,
        block_out_channels=(8, 8, 8, 8, 8),
        layers_per_block=1,
        scaling_factor=1.5,
    )


def tiny_hunyuan_video15_components(seed: int = 0, *, image_to_video: bool = False) -> dict:
    """Components of a tiny `HunyuanVideo15Pipeline`, deterministic for a given seed.

    Args:
        seed (`int`, defaults to 0): seed of the random initialisation.
        image_to_video (`bool`, defaults to `False`): components of a `HunyuanVideo15ImageToVideoPipeline` instead:
            an image-to-video transformer, a tiny SigLIP `image_encoder` (16x16 images, 4 tokens) and its
            `feature_extractor`.

    Returns:
        `dict`: `tokenizer`, `text_encoder` (Qwen2.5-VL), `tokenizer_2`, `text_encoder_2` (ByT5), `vae`,
        `transformer`, `scheduler` and `guider` (and `image_encoder`, `feature_extractor`), ready for
        `HunyuanVideo15Pipeline(**components)` (or `HunyuanVideo15ImageToVideoPipeline`).
    """
    from diffusers import ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer_2 = ByT5Tokenizer()
    torch.manual_seed(seed)
    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TINY_HUNYUAN_TEXT_DIM,
            intermediate_size=37,
            num_hidden_layers=3,  # the pipeline reads the third-to-last hidden states
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        )
    )
    torch.manual_seed(seed + 1)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=TINY_HUNYUAN_GLYPH_DIM,
            d_kv=4,
            d_ff=24,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    )
    components = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "tokenizer_2": tokenizer_2,
        "text_encoder_2": text_encoder_2,
        "vae": tiny_hunyuan_video15_vae(seed),
        "transformer": tiny_hunyuan_video15_transformer(seed, image_to_video=image_to_video),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0),
        "guider": ClassifierFreeGuidance(guidance_scale=6.0),
    }
    if image_to_video:
        from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

        torch.manual_seed(seed + 2)
        vision = SiglipVisionConfig(
            hidden_size=TINY_HUNYUAN_IMAGE_DIM,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        )
        components["image_encoder"] = SiglipVisionModel(vision)
        components["feature_extractor"] = SiglipImageProcessor(size={"height": 16, "width": 16})
    return components
