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
from .preemption import Preemption, parse_signal, preempted_exit_status
from .probe import AlignmentProbe, ProbeResult, read_agreement, write_probe
from .resume import RUN_SETTINGS_FILE, check_resume, run_settings, save_run_settings
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
    "RUN_SETTINGS_FILE",
    "Preemption",
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
    "check_resume",
    "checkpoint_step",
    "collate_examples",
    "intact_checkpoints",
    "list_checkpoints",
    "model_inputs",
    "parse_signal",
    "plan_student",
    "plan_training",
    "preempted_exit_status",
    "prune_checkpoints",
    "read_agreement",
    "resolve_checkpoint",
    "run_settings",
    "save_checkpoint",
    "save_run_settings",
    "save_model_card",
    "write_probe",
]
