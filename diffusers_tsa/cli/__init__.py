"""The command-line layer: the flag groups the commands share (`flags`) and the translation of the library's errors
into flag errors (`errors`)."""

from .deprecation import DeprecatedNames
from .errors import FLAGS, FlagError, flag_errors, flag_logs, run, translate
from .flags import (
    add_alignment_arguments,
    add_clip_arguments,
    add_dataset_arguments,
    add_loss_option_arguments,
    add_model_training_arguments,
    add_student_arguments,
    add_teacher_arguments,
    parse_with_preset,
)


__all__ = [
    "DeprecatedNames",
    "FLAGS",
    "FlagError",
    "add_alignment_arguments",
    "add_clip_arguments",
    "add_dataset_arguments",
    "add_loss_option_arguments",
    "add_model_training_arguments",
    "add_student_arguments",
    "add_teacher_arguments",
    "flag_errors",
    "flag_logs",
    "parse_with_preset",
    "run",
    "translate",
]
