"""diffusers-tsa: Tempered Self-Similarity Alignment for video diffusion models."""

from .errors import GridError, ModelLayoutError
from .hooks import BlockFeatureExtractor, CapturedFeatures
from .losses import repa_loss, trd_loss, tsa_loss
from .masking import motion_saliency_mask
from .projector import AlignmentProjector, GridResampling

__version__ = "0.1.0.dev0"

__all__ = [
    "AlignmentProjector",
    "BlockFeatureExtractor",
    "CapturedFeatures",
    "GridError",
    "GridResampling",
    "ModelLayoutError",
    "motion_saliency_mask",
    "repa_loss",
    "trd_loss",
    "tsa_loss",
]
