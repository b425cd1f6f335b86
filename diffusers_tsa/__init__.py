"""diffusers-tsa: Tempered Self-Similarity Alignment for video diffusion models."""

from .data import ClipSpec, load_video_dataset, read_video
from .errors import DatasetError, GridError, ModelLayoutError, UsageError, VideoDecodeError
from .features import TeacherFeatures, decode_teacher_features, teacher_targets
from .hooks import BlockFeatureExtractor, CapturedFeatures
from .losses import crepa_loss, repa_loss, trd_loss, tsa_loss
from .masking import motion_saliency_mask
from .projector import AlignmentProjector, GridResampling
from .teachers import TeacherInput, VideoTeacher, load_teacher


__version__ = "0.1.0.dev0"

__all__ = [
    "AlignmentProjector",
    "BlockFeatureExtractor",
    "CapturedFeatures",
    "ClipSpec",
    "DatasetError",
    "GridError",
    "GridResampling",
    "ModelLayoutError",
    "TeacherFeatures",
    "TeacherInput",
    "UsageError",
    "VideoDecodeError",
    "VideoTeacher",
    "crepa_loss",
    "decode_teacher_features",
    "load_teacher",
    "load_video_dataset",
    "motion_saliency_mask",
    "read_video",
    "repa_loss",
    "teacher_targets",
    "trd_loss",
    "tsa_loss",
]
