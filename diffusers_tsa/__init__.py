"""diffusers-tsa: Tempered Self-Similarity Alignment for video diffusion models."""

from .alignment_weight import AlignmentWeight
from .data import ClipSpec, load_video_dataset, read_video
from .errors import DatasetError, GridError, ModelLayoutError, UsageError, VideoDecodeError
from .features import TeacherFeatures, decode_teacher_features, teacher_targets
from .hooks import BlockFeatureExtractor, CapturedFeatures
from .loss_registry import (
    ALIGNMENT_LOSSES,
    AlignmentLoss,
    CREPAOptions,
    LossOptions,
    MTSAOptions,
    NoOptions,
    TSAOptions,
    WeightSchedule,
    loss_option,
    register_alignment_loss,
    unregister_alignment_loss,
)
from .losses import crepa_loss, repa_loss, trd_loss, tsa_loss
from .masking import motion_saliency_mask
from .projector import AlignmentProjector, GridResampling
from .teachers import TeacherInput, VideoTeacher, load_teacher


__version__ = "0.1.0.dev0"

__all__ = [
    "ALIGNMENT_LOSSES",
    "AlignmentLoss",
    "AlignmentProjector",
    "AlignmentWeight",
    "BlockFeatureExtractor",
    "CREPAOptions",
    "CapturedFeatures",
    "ClipSpec",
    "DatasetError",
    "GridError",
    "GridResampling",
    "LossOptions",
    "MTSAOptions",
    "ModelLayoutError",
    "NoOptions",
    "TSAOptions",
    "TeacherFeatures",
    "TeacherInput",
    "UsageError",
    "VideoDecodeError",
    "VideoTeacher",
    "WeightSchedule",
    "crepa_loss",
    "decode_teacher_features",
    "load_teacher",
    "load_video_dataset",
    "loss_option",
    "motion_saliency_mask",
    "read_video",
    "register_alignment_loss",
    "repa_loss",
    "teacher_targets",
    "trd_loss",
    "tsa_loss",
    "unregister_alignment_loss",
]
