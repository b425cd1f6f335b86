"""Teachers: frozen foundation models that give TSA its target correspondences (paper Eq. 4).

Video models (VideoMAE, VideoMAEv2, V-JEPA 2), or image models (DINOv2, DINOv3) run frame by frame.
`load_teacher` finds the family of a checkpoint from its config (`model_type`) in `TEACHER_FAMILIES`, one module per
family, or reads a raw VideoMAEv2 checkpoint file; every teacher answers the `VideoTeacher` interface.

- `base`: the interface (`VideoTeacher`, `TeacherInput`, `TeacherGeometry`).
- `videomae`, `vjepa2`, `image`: one module per family; `convert_videomaev2`: raw VideoMAEv2 files.
- `loading`: `teacher_config`, `teacher_geometry`, `load_teacher`.
"""

from .base import IMAGENET_MEAN, IMAGENET_STD, TEACHER_FRAMES, TeacherGeometry, TeacherInput, VideoTeacher
from .image import ImageTeacher
from .loading import TEACHER_FAMILIES, load_teacher, teacher_config, teacher_geometry
from .videomae import VideoMAETeacher, interpolate_position_table
from .vjepa2 import VJEPA2Teacher


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageTeacher",
    "TEACHER_FAMILIES",
    "TEACHER_FRAMES",
    "TeacherGeometry",
    "TeacherInput",
    "VJEPA2Teacher",
    "VideoMAETeacher",
    "VideoTeacher",
    "interpolate_position_table",
    "load_teacher",
    "teacher_config",
    "teacher_geometry",
]
