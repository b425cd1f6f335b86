"""Pieces of the training script that are worth testing on their own: the plan, the alignment term, checkpoints,
data.

The names are imported on first use: the training command reads its flags before torch is imported.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports


if TYPE_CHECKING:
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


#: Public name -> the module it comes from.
_SOURCES = {
    "ACCELERATE_FILES": ".checkpoints",
    "AlignedTransformer": ".alignment",
    "Alignment": ".alignment",
    "AlignmentConfig": ".alignment",
    "AlignmentProbe": ".probe",
    "CorruptRows": ".counters",
    "DataOrder": ".data",
    "NonFiniteBatches": ".counters",
    "OutputDirLock": ".output_lock",
    "Preemption": ".preemption",
    "ProbeResult": ".probe",
    "RUN_SETTINGS_FILE": ".resume",
    "RunningMeans": ".counters",
    "ShuffledOrder": ".data",
    "StudentPlan": ".plan",
    "TrainingClips": ".data",
    "TrainingPlan": ".plan",
    "TrainingSchedule": ".schedule",
    "UnreadableClips": ".counters",
    "alignment_loss": ".alignment",
    "check_checkpoint": ".checkpoints",
    "check_resume": ".resume",
    "checkpoint_step": ".checkpoints",
    "collate_examples": ".data",
    "intact_checkpoints": ".checkpoints",
    "list_checkpoints": ".checkpoints",
    "model_inputs": ".data",
    "parse_signal": ".preemption",
    "plan_student": ".plan",
    "plan_training": ".plan",
    "preempted_exit_status": ".preemption",
    "prune_checkpoints": ".checkpoints",
    "read_agreement": ".probe",
    "resolve_checkpoint": ".checkpoints",
    "run_settings": ".resume",
    "save_checkpoint": ".checkpoints",
    "save_model_card": ".model_card",
    "save_run_settings": ".resume",
    "write_probe": ".probe",
}

__all__ = sorted(_SOURCES)
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
