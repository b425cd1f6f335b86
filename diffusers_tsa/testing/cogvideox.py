"""Tiny, randomly initialised CogVideoX 1.0 and 1.5 pipelines (text- and image-to-video) built in code, for the tests, the offline demo and the
benchmarks.

They follow the shape rules of the real checkpoints at a scale that runs on a laptop CPU in seconds and needs no
network, as diffusers' own pipeline tests build theirs (`get_dummy_components`): a 9-frame 96x144 clip gives
CogVideoX latents of 3 x 12 x 18 and student tokens 3 x 6 x 9; the teacher sees 8 frames at 32x48 and returns a
4 x 2 x 3 grid, exactly as a 49-frame 480x720 clip gives 13 x 30 x 45 student tokens and a 24 x 10 x 15 teacher grid.
"""

from __future__ import annotations

import torch

from .text import TINY_TEXT_EMBED_DIM, tiny_text_encoder, tiny_tokenizer


TINY_NUM_FRAMES = 9
TINY_HEIGHT = 96
TINY_WIDTH = 144
TINY_MAX_TEXT_SEQ_LENGTH = 16


def tiny_cogvideox_components(
    seed: int = 0, *, num_layers: int = 2, patch_size_t: int | None = None, image_to_video: bool = False
) -> dict:
    """Components of a tiny `CogVideoXPipeline` (about 0.5 MB), deterministic for a given seed.

    Args:
        seed (`int`, defaults to 0): seed of the random initialisation.
        num_layers (`int`, defaults to 2): transformer blocks.
        patch_size_t (`int`, *optional*): latent frames per token frame; set, the transformer is a CogVideoX 1.5 one
            (3D RoPE up to the tiny sample size, its width kept at 32 as 2 heads of 16, the smallest head the RoPE
            splits evenly); `None` is CogVideoX 1.0 (as the 2B: sincos positions; 4 heads of 8).
        image_to_video (`bool`, defaults to `False`): components of a `CogVideoXImageToVideoPipeline` instead: the
            transformer takes twice the latent channels (noisy latents and the condition video); for 1.0 it has RoPE
            (2 heads of 16) and learned positional embeddings (as CogVideoX-5b-I2V), for 1.5 it embeds `ofs` and its VAE has
            `invert_scale_latents` (as CogVideoX1.5-5B-I2V).

    Returns:
        `dict`: `tokenizer`, `text_encoder`, `vae`, `transformer` and `scheduler`, ready for
        `CogVideoXPipeline(**components)` (or `CogVideoXImageToVideoPipeline(**components)`).
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    tokenizer = tiny_tokenizer()
    version = {"num_attention_heads": 4, "attention_head_dim": 8}  # CogVideoX 1.0
    rope = {"num_attention_heads": 2, "attention_head_dim": 16, "use_rotary_positional_embeddings": True}
    if patch_size_t is not None:  # CogVideoX 1.5
        version = {**rope, "patch_size_t": patch_size_t, **({"ofs_embed_dim": 2} if image_to_video else {})}
    elif image_to_video:  # CogVideoX-5b-I2V: RoPE and learned positions
        version = {**rope, "use_learned_positional_embeddings": True}
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        **version,
        in_channels=8 if image_to_video else 4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=TINY_TEXT_EMBED_DIM,
        num_layers=num_layers,
        sample_width=TINY_WIDTH // 8,
        sample_height=TINY_HEIGHT // 8,
        sample_frames=TINY_NUM_FRAMES,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=TINY_MAX_TEXT_SEQ_LENGTH,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        invert_scale_latents=image_to_video and patch_size_t is not None,
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": tiny_text_encoder(tokenizer, seed=seed),
        "vae": vae,
        "transformer": transformer,
        "scheduler": CogVideoXDDIMScheduler(),
    }
