"""What a checkpoint was trained with, recorded beside it, and a resumed run's settings compared with it before any
weight loads: settings that shape the model, what trains, or the optimizer's and the data's state are refused when
they differ; those a user may change on purpose (steps, checkpointing, validation, logging) are applied and listed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..errors import UsageError
from ..loss_registry import ALIGNMENT_LOSSES, WeightSchedule, options_of


#: The record written into every checkpoint.
RUN_SETTINGS_FILE = "run_settings.json"

#: Settings that shape the model or what trains (their weights would not load, or would train another model).
MODEL_SETTINGS = (
    "pretrained_model_name_or_path",
    "model_family",
    "revision",
    "variant",
    "training_mode",
    "rank",
    "lora_alpha",
    "expert",
    "alignment_loss",
    "alignment_depth",
    "alignment_target_depth",
    "projector_hidden_dim",
    "projector_head",
    "teacher_model_name_or_path",
    "teacher_frames",
    "height",
    "width",
    "max_num_frames",
    "max_sequence_length",
    "flow_weighting_scheme",
    "flow_logit_mean",
    "flow_logit_std",
    "flow_mode_scale",
    "flow_shift",
)
#: Settings whose state the checkpoint holds (the optimizer's, the scheduler's, the data order's): the checkpoint's
#: values would silently win, so a different one is refused. The batch settings fix the sample position of a step:
#: with another batch size, accumulation or process count the resumed run would not continue where the run stopped.
STATE_SETTINGS = (
    "learning_rate",
    "projector_learning_rate",
    "scale_lr",
    "lr_scheduler",
    "lr_warmup_steps",
    "lr_num_cycles",
    "lr_power",
    "optimizer",
    "adam_beta1",
    "adam_beta2",
    "adam_weight_decay",
    "adam_epsilon",
    "seed",
    "train_batch_size",
    "gradient_accumulation_steps",
    "num_processes",
)
#: Settings a resumed run may change on purpose: applied from the resumed step on, and listed in the log.
APPLIED_SETTINGS = (
    "max_train_steps",
    "num_train_epochs",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "alignment_weight",
    "max_grad_norm",
    "max_nonfinite_steps",
    "validation_prompt",
    "validation_steps",
    "validation_epochs",
    "num_validation_videos",
    "report_to",
    "tracker_name",
    "logging_dir",
)


def run_settings(args: argparse.Namespace, alignment_depth: int | None, num_processes: int) -> dict:
    """The settings of a training run a checkpoint records, by flag name (`args` as the training script parses
    them, the aligned block as resolved, and the process count). A local model folder is recorded as its absolute
    path; LoRA settings only for a LoRA, the alignment loss's options only with one."""
    names = [*MODEL_SETTINGS, *STATE_SETTINGS, *APPLIED_SETTINGS]
    if args.training_mode != "lora":
        names = [name for name in names if name not in ("rank", "lora_alpha")]
    settings = {name: getattr(args, name) for name in names if name != "num_processes"}
    loss = ALIGNMENT_LOSSES.get(args.alignment_loss)
    # The loss's options and, with a loss, the weight schedule (whose state the checkpoint holds) are refused if changed.
    options = (*options_of(loss.options), *options_of(WeightSchedule)) if loss else ()
    settings.update({option.name: getattr(args, option.dest) for option in options})
    model = args.pretrained_model_name_or_path
    settings["pretrained_model_name_or_path"] = os.path.abspath(model) if os.path.isdir(model) else model
    settings["alignment_depth"] = alignment_depth
    settings["num_processes"] = num_processes
    return settings


def save_run_settings(folder: str | os.PathLike, settings: dict) -> None:
    """Writes `settings` (`run_settings`) into a checkpoint folder."""
    (Path(folder) / RUN_SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True))


def check_resume(checkpoint: str | os.PathLike, settings: dict) -> list[tuple[str, object, object]]:
    """Compares a resumed run's `settings` (`run_settings`) with those `checkpoint` recorded.

    Returns:
        `list[tuple[str, object, object]]`: the settings a user may change (`APPLIED_SETTINGS`) that differ, as
        `(name, recorded, given)`, for the log.

    Raises:
        `UsageError`: naming every other setting that differs (or that only one side has), as recorded and as given.
    """
    recorded = json.loads((Path(checkpoint) / RUN_SETTINGS_FILE).read_text())
    differ = [name for name in sorted(set(recorded) | set(settings)) if recorded.get(name) != settings.get(name)]
    refused = [name for name in differ if name not in APPLIED_SETTINGS]
    if refused:
        raise UsageError(
            f"`resume_from_checkpoint={str(checkpoint)!r}` was trained with "
            + ", ".join(f"`{name}={recorded.get(name)!r}`" for name in refused)
            + ", but this run is given "
            + ", ".join(f"`{name}={settings.get(name)!r}`" for name in refused)
            + ": its weights, optimizer state or data position belong to those settings. Resume with the recorded "
            "values, or start a new run in another output folder."
        )
    return [(name, recorded.get(name), settings.get(name)) for name in differ]
