"""Pictures of what the alignment does: M-TSA motion masks (paper Fig. 4) and correspondence maps of query tokens,
teacher beside student, at several temperatures (paper Fig. 1 and 3).

Everything here renders tensors, so a training script can draw them at validation time and log the images; the
numbers and maps they show (`teacher_frames`, `salient_queries`, `student_features`, `correspondence_maps`) come from
`diffusers_tsa.diagnostics`. The command line `python -m diffusers_tsa.visualize {mask,correspondence}` reads a clip
and the models for you. Rendering needs matplotlib, an optional extra: `pip install "diffusers-tsa[viz]"`.

- Pictures (`render`): `render_motion_masks`, `render_correspondence` (one contact sheet, an RGB array) and
  `motion_mask_video`, `correspondence_video` (a list of RGB arrays).
- Files (`files`): `save_png`, `save_mp4` write them.


The names are imported on first use, so that the command parses its flags before torch is imported.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports


if TYPE_CHECKING:
    from .files import save_mp4, save_png
    from .render import (
        VIZ_EXTRA,
        correspondence_video,
        motion_mask_video,
        render_correspondence,
        render_motion_masks,
        require_matplotlib,
    )


#: Public name -> the module it comes from.
_SOURCES = {
    "VIZ_EXTRA": ".render",
    "correspondence_video": ".render",
    "motion_mask_video": ".render",
    "render_correspondence": ".render",
    "render_motion_masks": ".render",
    "require_matplotlib": ".render",
    "save_mp4": ".files",
    "save_png": ".files",
}

__all__ = sorted(_SOURCES)
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
