"""Tiny, randomly initialised models built in code, for the tests, the offline demo and the benchmarks: one module
per model family (`cogvideox`, `wan`, `ltx_video`, `ltx2`, `kandinsky5`, `hunyuan_video15`, `sana_video`, and `nova`, a test
double of NOVA's `diffnext` package), the shared tokenizer and text encoders (`text`), teachers (`teachers`),
synthetic clips (`clips`), the model card's checks (`model_card`) and a transformer spy for tests (`spy`)."""

from .clips import BALL_COLOURS, render_ball, write_test_clip, write_test_dataset
from .cogvideox import (
    TINY_HEIGHT,
    TINY_MAX_TEXT_SEQ_LENGTH,
    TINY_NUM_FRAMES,
    TINY_WIDTH,
    tiny_cogvideox_components,
)
from .hunyuan_video15 import (
    TINY_HUNYUAN_HEIGHT,
    TINY_HUNYUAN_NUM_FRAMES,
    TINY_HUNYUAN_WIDTH,
    tiny_hunyuan_video15_components,
)
from .kandinsky5 import (
    TINY_KANDINSKY5_HEIGHT,
    TINY_KANDINSKY5_NUM_FRAMES,
    TINY_KANDINSKY5_WIDTH,
    tiny_kandinsky5_components,
)
from .ltx2 import TINY_LTX2_HEIGHT, TINY_LTX2_NUM_FRAMES, TINY_LTX2_WIDTH, tiny_ltx2_components
from .ltx_video import TINY_LTX_HEIGHT, TINY_LTX_NUM_FRAMES, TINY_LTX_WIDTH, tiny_ltx_video_components
from .sana_video import (
    TINY_SANA_VIDEO_HEIGHT,
    TINY_SANA_VIDEO_NUM_FRAMES,
    TINY_SANA_VIDEO_WIDTH,
    tiny_sana_video_components,
)
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
    "TINY_HUNYUAN_HEIGHT",
    "TINY_HUNYUAN_NUM_FRAMES",
    "TINY_HUNYUAN_WIDTH",
    "TINY_KANDINSKY5_HEIGHT",
    "TINY_KANDINSKY5_NUM_FRAMES",
    "TINY_KANDINSKY5_WIDTH",
    "TINY_LTX2_HEIGHT",
    "TINY_LTX2_NUM_FRAMES",
    "TINY_LTX2_WIDTH",
    "TINY_LTX_HEIGHT",
    "TINY_LTX_NUM_FRAMES",
    "TINY_LTX_WIDTH",
    "TINY_MAX_TEXT_SEQ_LENGTH",
    "TINY_NUM_FRAMES",
    "TINY_SANA_VIDEO_HEIGHT",
    "TINY_SANA_VIDEO_NUM_FRAMES",
    "TINY_SANA_VIDEO_WIDTH",
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
    "tiny_hunyuan_video15_components",
    "tiny_kandinsky5_components",
    "tiny_ltx2_components",
    "tiny_ltx_video_components",
    "tiny_sana_video_components",
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
