"""Tiny, randomly initialised models built in code, for the tests, the offline demo and the benchmarks.

They follow the shape rules of the real checkpoints at a scale that runs on a laptop CPU in seconds and needs no
network, as diffusers' own pipeline tests build theirs (`get_dummy_components`): a 9-frame 96x144 clip gives
CogVideoX latents of 3 x 12 x 18 and student tokens 3 x 6 x 9; the teacher sees 8 frames at 32x48 and returns a
4 x 2 x 3 grid, exactly as a 49-frame 480x720 clip gives 13 x 30 x 45 student tokens and a 24 x 10 x 15 teacher grid.
"""

from __future__ import annotations

import torch


TINY_NUM_FRAMES = 9
TINY_HEIGHT = 96
TINY_WIDTH = 144
TINY_TEXT_EMBED_DIM = 32
TINY_MAX_TEXT_SEQ_LENGTH = 16


#: The tiny tokenizer's vocabulary: the words of the demo's, tests' and benchmarks' captions (others become <unk>).
TINY_WORDS = (
    "a an the is to and on at of into ball square cat glass water red green blue yellow white thrown gently hard "
    "right left falls jumps pours bounces floor moves speed . , 0 1 2 3 4 5 6 7 8 9"
).split()


def tiny_tokenizer():
    """A lower-casing word-level tokenizer over `TINY_WORDS`, built in memory; it saves, reloads with
    `AutoTokenizer`, and works with transformers 4 and 5 (NOVA's `diffnext` needs 4)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", *TINY_WORDS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")


def tiny_cogvideox_components(seed: int = 0, *, num_layers: int = 2, patch_size_t: int | None = None) -> dict:
    """Components of a tiny `CogVideoXPipeline` (about 0.5 MB), deterministic for a given seed.

    Args:
        seed (`int`, defaults to 0): seed of the random initialisation.
        num_layers (`int`, defaults to 2): transformer blocks.
        patch_size_t (`int`, *optional*): latent frames per token frame; set, the transformer is a CogVideoX 1.5 one
            (3D RoPE up to the tiny sample size, its width kept at 32 as 2 heads of 16, the smallest head the RoPE
            splits evenly); `None` is CogVideoX 1.0 (as the 2B: sincos positions; 4 heads of 8).

    Returns:
        `dict`: `tokenizer`, `text_encoder`, `vae`, `transformer` and `scheduler`, ready for
        `CogVideoXPipeline(**components)`.
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    tokenizer = tiny_tokenizer()
    version = {"num_attention_heads": 4, "attention_head_dim": 8}  # CogVideoX 1.0
    if patch_size_t is not None:  # CogVideoX 1.5
        version = {
            "num_attention_heads": 2,
            "attention_head_dim": 16,
            "patch_size_t": patch_size_t,
            "use_rotary_positional_embeddings": True,
        }
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        **version,
        in_channels=4,
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
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": tiny_text_encoder(tokenizer, seed=seed),
        "vae": vae,
        "transformer": transformer,
        "scheduler": CogVideoXDDIMScheduler(),
    }


def tiny_text_encoder(tokenizer, *, seed: int = 0, width: int = TINY_TEXT_EMBED_DIM, umt5: bool = False):
    """A tiny T5 encoder (UMT5 for Wan) over `tokenizer`'s vocabulary: 2 layers of 4 heads, `width` wide."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    torch.manual_seed(seed)
    return model_class(
        config_class(
            vocab_size=len(tokenizer),
            d_model=width,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    )


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


def write_test_clip(
    path,
    *,
    num_frames: int = 12,
    height: int = 96,
    width: int = 160,
    square: int = 24,
    speed: int = 6,
    gray_step: int = 0,
    fps: int = 8,
) -> None:
    """Writes an mp4 (H.264 via imageio-ffmpeg) of a white square moving right on a dark still background.

    Frame `t` has its square's left edge at `4 + speed * t`, vertically centred; with `gray_step > 0` the background
    of frame `t` is the uniform gray `16 + gray_step * t` instead (to identify frames after decoding).
    """
    import imageio
    import numpy as np

    with imageio.get_writer(path, fps=fps, codec="libx264", quality=9, macro_block_size=1) as writer:
        for t in range(num_frames):
            frame = np.full((height, width, 3), 16 + gray_step * t, dtype=np.uint8)
            top, left = (height - square) // 2, 4 + speed * t
            frame[top : top + square, left : left + square] = 240
            writer.append_data(frame)


def write_test_dataset(root, *, num_clips: int = 4, caption: str = "a white square moves right") -> None:
    """A folder for `--instance_data_root`: `num_clips` `write_test_clip` clips (speeds 3, 4, ...) under `clips/`,
    `prompts.txt` and `videos.txt` with one caption and one relative path per line."""
    from pathlib import Path

    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    speeds = range(3, 3 + num_clips)
    for speed in speeds:
        write_test_clip(root / "clips" / f"{speed}.mp4", speed=speed)
    (root / "prompts.txt").write_text("".join(f"{caption} at speed {speed}\n" for speed in speeds))
    (root / "videos.txt").write_text("".join(f"clips/{speed}.mp4\n" for speed in speeds))
