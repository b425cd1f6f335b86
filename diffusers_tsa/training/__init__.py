"""Pieces of the training script that are worth testing on their own: the alignment term, checkpoints, data."""

from .alignment import ALIGNMENT_LOSSES, AlignedTransformer, Alignment, AlignmentConfig, alignment_loss
from .checkpoints import list_checkpoints, prune_checkpoints, resolve_checkpoint, save_checkpoint
from .data import TrainingClips, collate_examples
from .model_card import save_model_card

__all__ = [
    "ALIGNMENT_LOSSES",
    "AlignedTransformer",
    "Alignment",
    "AlignmentConfig",
    "TrainingClips",
    "alignment_loss",
    "collate_examples",
    "list_checkpoints",
    "prune_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_model_card",
]
