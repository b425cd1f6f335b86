"""Tiny, randomly initialised models built in code, for the tests, the offline demo and the benchmarks: one module
per model family (`cogvideox`, `wan`, `ltx_video`, and `nova`, a test double of NOVA's `diffnext` package), the
shared tokenizer and text encoders (`text`), teachers (`teachers`), synthetic clips (`clips`) and the model card's
checks (`model_card`)."""

from .clips import BALL_COLOURS, render_ball, write_test_clip, write_test_dataset
from .cogvideox import (
    TINY_HEIGHT,
    TINY_MAX_TEXT_SEQ_LENGTH,
    TINY_NUM_FRAMES,
    TINY_WIDTH,
    tiny_cogvideox_components,
)
from .ltx_video import TINY_LTX_HEIGHT, TINY_LTX_NUM_FRAMES, TINY_LTX_WIDTH, tiny_ltx_video_components
from .teachers import tiny_dinov2, tiny_videomae, tiny_vjepa2
from .text import TINY_TEXT_EMBED_DIM, TINY_WORDS, tiny_text_encoder, tiny_tokenizer
from .wan import (
    TINY_WAN_BOUNDARY_RATIO,
    TINY_WAN_HEIGHT,
    TINY_WAN_NUM_FRAMES,
    TINY_WAN_WIDTH,
    tiny_wan_components,
    tiny_wan_transformer,
    tiny_wan_vae,
)


__all__ = [
    "TINY_HEIGHT",
    "TINY_LTX_HEIGHT",
    "TINY_LTX_NUM_FRAMES",
    "TINY_LTX_WIDTH",
    "TINY_MAX_TEXT_SEQ_LENGTH",
    "TINY_NUM_FRAMES",
    "TINY_TEXT_EMBED_DIM",
    "TINY_WAN_BOUNDARY_RATIO",
    "TINY_WAN_HEIGHT",
    "TINY_WAN_NUM_FRAMES",
    "TINY_WAN_WIDTH",
    "TINY_WIDTH",
    "TINY_WORDS",
    "BALL_COLOURS",
    "tiny_cogvideox_components",
    "tiny_dinov2",
    "tiny_ltx_video_components",
    "tiny_text_encoder",
    "tiny_tokenizer",
    "tiny_videomae",
    "tiny_vjepa2",
    "tiny_wan_components",
    "tiny_wan_transformer",
    "tiny_wan_vae",
    "render_ball",
    "write_test_clip",
    "write_test_dataset",
]
