"""The time scale rule: a teacher frame of `--teacher_frames latent`, and so a CREPA neighbour step on it, spans at
most CogVideoX's 4 pixel frames (one latent frame of its 4x VAE) on every family, whatever its VAE's temporal
compression; checked on each family's pixel frames per student token frame."""

import pytest

from diffusers_tsa import GridResampling
from diffusers_tsa.adapters.cogvideox import CogVideoXSpec
from diffusers_tsa.adapters.hunyuan_video15 import HunyuanVideo15Spec
from diffusers_tsa.adapters.kandinsky5 import Kandinsky5Spec
from diffusers_tsa.adapters.ltx2 import LTX2Spec
from diffusers_tsa.adapters.ltx_video import LTXVideoSpec
from diffusers_tsa.adapters.nova import NOVASpec
from diffusers_tsa.adapters.sana_video import SanaVideoSpec
from diffusers_tsa.adapters.spec import REFERENCE_FRAME_SPACING
from diffusers_tsa.adapters.wan import WanSpec
from diffusers_tsa.teachers import TeacherInput


BASE = {"pretrained_model_name_or_path": "", "num_blocks": 30, "hidden_size": 64, "min_depth": 1}
# family spec, its default clip, and its pixel frames per token frame by hand: the VAE's temporal compression times
# the transformer's temporal patch.
FAMILIES = {
    "cogvideox": (CogVideoXSpec(**BASE), (49, 480, 720), 4),
    "cogvideox15": (CogVideoXSpec(**BASE, patch_size_t=2), (81, 768, 1360), 4 * 2),
    "wan": (WanSpec(**BASE), (81, 480, 832), 4),
    "ltx_video": (LTXVideoSpec(**BASE), (121, 512, 768), 8),
    "ltx2": (LTX2Spec(**BASE), (121, 512, 768), 8),
    "nova": (NOVASpec(**BASE), (33, 480, 768), 4),
    "kandinsky5": (Kandinsky5Spec(**BASE), (121, 512, 768), 4),
    "hunyuan_video15": (HunyuanVideo15Spec(**BASE), (121, 480, 848), 4),
    "sana_video": (SanaVideoSpec(**BASE), (81, 480, 832), 4),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_latent_teacher_frames_span_cogvideox_pixel_time(name):
    spec, (frames, height, width), spacing = FAMILIES[name]
    assert REFERENCE_FRAME_SPACING == 4  # CogVideoX's latent frame
    assert spec.frame_spacing == spacing
    per_token_frame = -(-spacing // REFERENCE_FRAME_SPACING)  # ceil: 1 for the 4x VAEs, 2 for the 8x ones
    assert spec.teacher_frames_per_token_frame == per_token_frame
    grid = spec.token_grid(frames, height, width)
    latent_frames = spec.teacher_latent_frames(frames, height, width)
    assert latent_frames == grid[0] * per_token_frame
    teacher = TeacherInput.for_clip(frames, height, width, frames="latent", latent_frames=latent_frames)
    # The teacher's frames, picked evenly over the clip, are at most 4 pixel frames apart: a CREPA neighbour at
    # distance 1 spans what it spans on CogVideoX, not a whole 8-frame latent frame.
    step = (frames - 1) / (teacher.num_frames - 1)
    assert 2 < step <= REFERENCE_FRAME_SPACING
    # and the projector reaches that teacher grid from the student's with an integer ratio in time.
    resampling = GridResampling.between(grid, (teacher.num_frames, *grid[1:]), drop_first_frame=False)
    assert resampling.upsample[0] == per_token_frame and not resampling.resize
