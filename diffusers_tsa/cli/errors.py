"""How library errors come back as flag errors.

The library speaks Python: its errors name arguments as `name=value` (`depth=99`, `TeacherInput.height=40`). This
module maps each such name to the flag that sets it (`FLAGS`), so that a user mistake ends a command with one line,
`error: --alignment_depth=99 is out of range ...`, before any weight is loaded.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections import ChainMap
from typing import Callable, Iterator, Mapping, TypeVar

from ..errors import UsageError
from ..loss_registry import registered_options


T = TypeVar("T")


class _LossOptionFlags(Mapping):
    """Option name -> flag of every option of the registered alignment losses, read from the registry at each lookup
    (a loss registered after this module is imported has its flags too)."""

    def __getitem__(self, name: str) -> str:
        return registered_options()[name].flag

    def __iter__(self) -> Iterator[str]:
        return iter(registered_options())

    def __len__(self) -> int:
        return len(registered_options())


_ARGUMENT_FLAGS = {
    "pretrained_model_name_or_path": "--pretrained_model_name_or_path",
    "family": "--model_family",
    "revision": "--revision",
    "variant": "--variant",
    "id_token": "--id_token",
    "dataset_name": "--dataset_name",
    "instance_data_root": "--instance_data_root",
    "caption_column": "--caption_column",
    "video_column": "--video_column",
    "ClipSpec.height": "--height",
    "ClipSpec.width": "--width",
    "ClipSpec.max_num_frames": "--max_num_frames",
    "ClipSpec.skip_frames_start": "--skip_frames_start",
    "ClipSpec.skip_frames_end": "--skip_frames_end",
    "ClipSpec.reshape_mode": "--video_reshape_mode",
    "video_backend": "--video_backend",
    # The clip size as a model spec checks it (`ModelSpec.check_clip`).
    "num_frames": "--max_num_frames",
    "height": "--height",
    "width": "--width",
    "vae_slicing": "--enable_slicing",
    "vae_tiling": "--enable_tiling",
    "use_dynamic_cfg": "--use_dynamic_cfg",
    "name_or_path": "--teacher_model_name_or_path",
    "teacher_model_name_or_path": "--teacher_model_name_or_path",
    "TeacherInput": "--teacher_*",
    "TeacherInput.num_frames": "--teacher_num_frames",
    "TeacherInput.height": "--teacher_height",
    "TeacherInput.width": "--teacher_width",
    "TeacherInput.frame_pooling": "--teacher_frames",
    "TeacherInput.drop_first_frame": "--teacher_frames",
    "teacher_frames": "--teacher_frames",
    "depth": "--alignment_depth",
    "loss": "--alignment_loss",
    "weight": "--alignment_weight",
    "features_column": "--teacher_features_column",
    "random_flip": "--random_flip",
    "validation_video": "--validation_video",
    "projector_hidden_dim": "--projector_hidden_dim",
    "projector_head": "--projector_head",
    "target_depth": "--alignment_target_depth",
    "preset": "--alignment_preset",
    "storage_dtype": "--storage_dtype",
    "max_sequence_length": "--max_sequence_length",
    "flow_matching": "--flow_*",
    "weighting_scheme": "--flow_weighting_scheme",
    "logit_std": "--flow_logit_std",
    "shift": "--flow_shift",
    "expert": "--expert",
    "teacher_dtype": "--teacher_dtype",
    "max_nonfinite_steps": "--max_nonfinite_steps",
    "max_corrupt_row_share": "--max_corrupt_row_share",
    "preemption_signal": "--preemption_signal",
    "resume_from_checkpoint": "--resume_from_checkpoint",
    "output_dir": "--output_dir",
    # The settings a resumed run is compared with (`diffusers_tsa.training.resume`), by the training script's flags.
    "training_mode": "--training_mode",
    "rank": "--rank",
    "lora_alpha": "--lora_alpha",
    "alignment_loss": "--alignment_loss",
    "alignment_depth": "--alignment_depth",
    "model_family": "--model_family",
    "learning_rate": "--learning_rate",
    "projector_learning_rate": "--projector_learning_rate",
    "scale_lr": "--scale_lr",
    "lr_scheduler": "--lr_scheduler",
    "lr_warmup_steps": "--lr_warmup_steps",
    "lr_num_cycles": "--lr_num_cycles",
    "lr_power": "--lr_power",
    "optimizer": "--optimizer",
    "adam_beta1": "--adam_beta1",
    "adam_beta2": "--adam_beta2",
    "adam_weight_decay": "--adam_weight_decay",
    "adam_epsilon": "--adam_epsilon",
    "seed": "--seed",
    "train_batch_size": "--train_batch_size",
    "gradient_accumulation_steps": "--gradient_accumulation_steps",
    "max_num_frames": "--max_num_frames",
    "flow_weighting_scheme": "--flow_weighting_scheme",
    "flow_logit_mean": "--flow_logit_mean",
    "flow_logit_std": "--flow_logit_std",
    "flow_mode_scale": "--flow_mode_scale",
    "flow_shift": "--flow_shift",
    "num_processes": "accelerate launch --num_processes",
}
#: Library argument (as error messages spell it) -> the flag that sets it; the options of the alignment losses come
#: from the loss registry (`temperature` -> `--tsa_temperature`, `crepa_cumulative_neighbors` -> ...).
FLAGS: Mapping[str, str] = ChainMap(_ARGUMENT_FLAGS, _LossOptionFlags())
_ARGUMENT = re.compile(r"`([A-Za-z_][\w.]*)(=[^`]*)?`")


class FlagError(UsageError):
    """A flag, or a combination of flags, that cannot work; the message names the flag and what would."""


def translate(message: str, flags: Mapping[str, str] = FLAGS) -> str:
    """`message` with each library argument it names (`` `depth=99` ``) replaced by its flag
    (`--alignment_depth=99`); names `flags` does not know are left as they are."""

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2) or ""
        return flags[name] + value if name in flags else match.group(0)

    return _ARGUMENT.sub(flag, message)


@contextlib.contextmanager
def flag_errors(flags: Mapping[str, str] = FLAGS) -> Iterator[None]:
    """Turns the library's `UsageError`s raised inside the block into `FlagError`s that name the flags."""
    try:
        yield
    except FlagError:
        raise
    except UsageError as err:
        raise FlagError(translate(str(err), flags)) from None


def _speaks_python(logger_name: str) -> bool:
    """Whether a logger is this package's (or the running command's), whose messages name library arguments."""
    return logger_name == "__main__" or logger_name.partition(".")[0] == "diffusers_tsa"


@contextlib.contextmanager
def flag_logs(flags: Mapping[str, str] = FLAGS) -> Iterator[None]:
    """Inside the block, the package's log messages name flags as its errors do: the warning of a skipped clip says
    `--max_num_frames`, not `ClipSpec.max_num_frames` (other libraries' messages are left as they are)."""
    make_record = logging.getLogRecordFactory()

    def flag_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if _speaks_python(record.name):
            with contextlib.suppress(Exception):  # a malformed call is logging's to report, as without this
                record.msg, record.args = translate(record.getMessage(), flags), ()
        return record

    logging.setLogRecordFactory(flag_record)
    try:
        yield
    finally:
        logging.setLogRecordFactory(make_record)


def run(main: Callable[[], T], flags: Mapping[str, str] = FLAGS) -> T:
    """Runs a command's `main`, its log messages naming flags (`flag_logs`); a user mistake ends it with one
    `error: ...` line (exit status 1), no traceback."""
    try:
        with flag_logs(flags):
            return main()
    except UsageError as err:
        sys.exit(f"error: {translate(str(err), flags)}")
