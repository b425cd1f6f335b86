"""Pictures of what the alignment does: M-TSA motion masks (paper Fig. 4) and correspondence maps of query tokens,
teacher beside student, at several temperatures (paper Fig. 1 and 3).

Everything here renders tensors, so a training script can draw them at validation time and log the images; the
numbers and maps they show (`teacher_frames`, `salient_queries`, `student_features`, `correspondence_maps`) come from
`diffusers_tsa.diagnostics`. The command line `python -m diffusers_tsa.visualize {mask,correspondence}` reads a clip
and the models for you. Rendering needs matplotlib, an optional extra: `pip install "diffusers-tsa[viz]"`.

- Pictures (`render`): `render_motion_masks`, `render_correspondence` (one contact sheet, an RGB array) and
  `motion_mask_video`, `correspondence_video` (a list of RGB arrays).
- Files (`files`): `save_png`, `save_mp4` write them.
"""

from .files import save_mp4, save_png
from .render import (
    VIZ_EXTRA,
    correspondence_video,
    motion_mask_video,
    render_correspondence,
    render_motion_masks,
    require_matplotlib,
)


__all__ = [
    "VIZ_EXTRA",
    "correspondence_video",
    "motion_mask_video",
    "render_correspondence",
    "render_motion_masks",
    "require_matplotlib",
    "save_mp4",
    "save_png",
]
