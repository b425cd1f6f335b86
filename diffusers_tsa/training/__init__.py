"""Pieces of the training script that are worth testing on their own: the plan, the alignment term, checkpoints,
data."""

from .alignment import AlignedTransformer, Alignment, AlignmentConfig, alignment_loss
from .checkpoints import (
    ACCELERATE_FILES,
    check_checkpoint,
    checkpoint_step,
    intact_checkpoints,
    list_checkpoints,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from .counters import CorruptRows, NonFiniteBatches, RunningMeans, UnreadableClips
from .data import DataOrder, ShuffledOrder, TrainingClips, collate_examples, model_inputs
from .model_card import save_model_card
from .output_lock import OutputDirLock
from .plan import StudentPlan, TrainingPlan, plan_student, plan_training
from .probe import AlignmentProbe, ProbeResult, read_agreement, write_probe
from .schedule import TrainingSchedule


__all__ = [
    "ACCELERATE_FILES",
    "AlignedTransformer",
    "Alignment",
    "AlignmentConfig",
    "AlignmentProbe",
    "CorruptRows",
    "DataOrder",
    "NonFiniteBatches",
    "OutputDirLock",
    "ProbeResult",
    "RunningMeans",
    "ShuffledOrder",
    "StudentPlan",
    "TrainingClips",
    "TrainingPlan",
    "TrainingSchedule",
    "UnreadableClips",
    "alignment_loss",
    "check_checkpoint",
    "checkpoint_step",
    "collate_examples",
    "intact_checkpoints",
    "list_checkpoints",
    "model_inputs",
    "plan_student",
    "plan_training",
    "prune_checkpoints",
    "read_agreement",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_model_card",
    "write_probe",
]
