"""diffusers-tsa: Tempered Self-Similarity Alignment for video diffusion models.

The public names are imported on first use, so that a command imports torch, diffusers and transformers only after
its arguments are parsed (`python -m diffusers_tsa.eval.report` needs none of them).
"""

from typing import TYPE_CHECKING

from .lazy import lazy_exports


if TYPE_CHECKING:
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


#: Public name -> the module it comes from.
_SOURCES = {
    "ALIGNMENT_LOSSES": ".loss_registry",
    "AlignmentLoss": ".loss_registry",
    "AlignmentProjector": ".projector",
    "AlignmentWeight": ".alignment_weight",
    "BlockFeatureExtractor": ".hooks",
    "CREPAOptions": ".loss_registry",
    "CapturedFeatures": ".hooks",
    "ClipSpec": ".data",
    "DatasetError": ".errors",
    "GridError": ".errors",
    "GridResampling": ".projector",
    "LossOptions": ".loss_registry",
    "MTSAOptions": ".loss_registry",
    "ModelLayoutError": ".errors",
    "NoOptions": ".loss_registry",
    "TSAOptions": ".loss_registry",
    "TeacherFeatures": ".features",
    "TeacherInput": ".teachers",
    "UsageError": ".errors",
    "VideoDecodeError": ".errors",
    "VideoTeacher": ".teachers",
    "WeightSchedule": ".loss_registry",
    "crepa_loss": ".losses",
    "decode_teacher_features": ".features",
    "load_teacher": ".teachers",
    "load_video_dataset": ".data",
    "loss_option": ".loss_registry",
    "motion_saliency_mask": ".masking",
    "read_video": ".data",
    "register_alignment_loss": ".loss_registry",
    "repa_loss": ".losses",
    "teacher_targets": ".features",
    "trd_loss": ".losses",
    "tsa_loss": ".losses",
    "unregister_alignment_loss": ".loss_registry",
}

__all__ = sorted(_SOURCES)
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
