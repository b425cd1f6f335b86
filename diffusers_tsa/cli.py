"""The command line of diffusers-tsa: flags shared by `train_text_to_video_tsa.py` and `python -m
diffusers_tsa.features`, how they become library objects, and how library errors come back as flag errors.

The library speaks Python: its errors name arguments as `name=value` (`depth=99`, `TeacherInput.height=40`). This
module maps each such name to the flag that sets it (`FLAGS`), so that a user mistake ends a command with one line,
`error: --alignment_depth=99 is out of range ...`, before any weight is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, TypeVar

import datasets

from .adapters import ModelSpec, load_spec
from .adapters.flow_matching import WEIGHTING_SCHEMES, FlowMatching
from .adapters.options import TrainingOptions
from .data import ClipSpec, load_video_dataset
from .data.columns import LATENTS_COLUMN
from .data.video import RESHAPE_MODES
from .errors import UsageError
from .features import FEATURES_COLUMN, MASK_COLUMN
from .features.precomputed import (
    check_inputs_settings,
    check_precomputed_settings,
    inputs_settings,
    precomputed_settings,
    typed_inputs_table,
    typed_precomputed_table,
)
from .projector import PROJECTOR_FILES
from .teachers import TeacherInput, teacher_config, teacher_geometry
from .teachers.base import patch_sizes
from .training.alignment import ALIGNMENT_LOSSES, AlignmentConfig
from .training.checkpoints import ACCELERATE_FILES, check_checkpoint, resolve_checkpoint
from .training.data import DataOrder


T = TypeVar("T")

#: Library argument (as error messages spell it) -> the flag that sets it.
FLAGS: dict[str, str] = {
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
    # The clip size as a model spec checks it (`ModelSpec.check_clip`).
    "num_frames": "--max_num_frames",
    "height": "--height",
    "width": "--width",
    "vae_slicing": "--enable_slicing",
    "vae_tiling": "--enable_tiling",
    "use_dynamic_cfg": "--use_dynamic_cfg",
    "name_or_path": "--teacher_model_name_or_path",
    "TeacherInput.num_frames": "--teacher_num_frames",
    "TeacherInput.height": "--teacher_height",
    "TeacherInput.width": "--teacher_width",
    "depth": "--alignment_depth",
    "loss": "--alignment_loss",
    "weight": "--alignment_weight",
    "temperature": "--tsa_temperature",
    "mask_ratio": "--tsa_mask_ratio",
    "projector_hidden_dim": "--projector_hidden_dim",
    "crepa_adjacent_distance": "--crepa_adjacent_distance",
    "crepa_temporal_decay": "--crepa_temporal_decay",
    "storage_dtype": "--storage_dtype",
    "max_sequence_length": "--max_sequence_length",
    "flow_matching": "--flow_*",
    "weighting_scheme": "--flow_weighting_scheme",
    "logit_std": "--flow_logit_std",
    "shift": "--flow_shift",
    "expert": "--expert",
    "resume_from_checkpoint": "--resume_from_checkpoint",
    "output_dir": "--output_dir",
}
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


def run(main: Callable[[], T], flags: Mapping[str, str] = FLAGS) -> T:
    """Runs a command's `main`; a user mistake ends it with one `error: ...` line (exit status 1), no traceback."""
    try:
        return main()
    except UsageError as err:
        sys.exit(f"error: {translate(str(err), flags)}")


# --- Flag groups ---------------------------------------------------------------------------------------------------


def add_model_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The family's training options (`TrainingOptions`): text length, flow matching (Wan, LTX-Video; finetrainers'
    flag names and defaults) and the expert of a two-expert checkpoint."""
    group = parser.add_argument_group("model training options")
    group.add_argument(
        "--max_sequence_length",
        type=int,
        default=None,
        help="Text tokens per prompt (default: the family's pipeline default: 226 CogVideoX, 512 Wan, 128 LTX).",
    )
    group.add_argument(
        "--flow_weighting_scheme",
        type=str,
        default="logit_normal",
        choices=WEIGHTING_SCHEMES,
        help="Flow-matching families: how noise levels are drawn or the loss weighted (logit_normal).",
    )
    group.add_argument("--flow_logit_mean", type=float, default=0.0, help="Mean of the logit-normal draw (0.0).")
    group.add_argument("--flow_logit_std", type=float, default=1.0, help="Std of the logit-normal draw (1.0).")
    group.add_argument("--flow_mode_scale", type=float, default=1.29, help="Scale of the 'mode' draw (1.29).")
    group.add_argument(
        "--flow_shift", type=float, default=1.0, help="Shift of the noise levels; above 1 favours noisier ones (1.0)."
    )
    group.add_argument(
        "--expert",
        type=str,
        default=None,
        help="Two-expert checkpoints (Wan 2.2 A14B): the expert that trains, 'high_noise' (transformer) or "
        "'low_noise' (transformer_2), each on its own noise levels; the other stays as it is.",
    )


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """`--dataset_name`, `--dataset_config_name`, `--instance_data_root`, `--video_column`, `--caption_column`, as
    in diffusers' `train_cogvideox_lora.py`."""
    group = parser.add_argument_group("dataset")
    group.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="A Hub dataset, a folder written by `save_to_disk` (e.g. by `python -m diffusers_tsa.features`), or a "
        "CSV/JSON/JSONL metadata file with caption and video columns.",
    )
    group.add_argument("--dataset_config_name", type=str, default=None, help="The config of a Hub dataset.")
    group.add_argument(
        "--instance_data_root",
        type=str,
        default=None,
        help="Folder of the clips; alone, it holds two text files named by --caption_column and --video_column.",
    )
    group.add_argument(
        "--video_column",
        type=str,
        default="video",
        help="Dataset column with the videos, or the file under --instance_data_root listing one video path a line.",
    )
    group.add_argument(
        "--caption_column",
        type=str,
        default="text",
        help="Dataset column with the captions, or the file under --instance_data_root with one caption a line.",
    )


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    """How clips are read (`ClipSpec`); training and precomputed features must be given the same values."""
    group = parser.add_argument_group("clips (the same for precomputing and training)")
    group.add_argument("--height", type=int, default=480, help="All input videos are resized to this height (480).")
    group.add_argument("--width", type=int, default=720, help="All input videos are resized to this width (720).")
    group.add_argument(
        "--max_num_frames", type=int, default=49, help="Frames kept per clip, uniform stride, trimmed to 4k+1 (49)."
    )
    group.add_argument("--skip_frames_start", type=int, default=0, help="Frames dropped at the start of a clip (0).")
    group.add_argument("--skip_frames_end", type=int, default=0, help="Frames dropped at the end of a clip (0).")
    group.add_argument(
        "--video_reshape_mode",
        type=str,
        default="center",
        choices=RESHAPE_MODES,
        help="Crop after an aspect-preserving resize ('center', 'random'; precomputed features need a fixed crop) "
        "or resize to the size ('none').",
    )


def add_teacher_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """The video teacher and what it sees of each clip (`TeacherInput`)."""
    group = parser.add_argument_group("teacher")
    group.add_argument(
        "--teacher_model_name_or_path",
        "--teacher",
        type=str,
        default=None,
        required=required,
        help="Teacher: a VideoMAE/VideoMAEv2 folder or Hub id, a raw VideoMAEv2 .pth, V-JEPA 2, or an image model run "
        "frame by frame (DINOv2, DINOv2 with registers, DINOv3)."
        + ("" if required else " Needed to run the teacher online; optional with precomputed features."),
    )
    group.add_argument("--teacher_revision", type=str, default=None, help="Hub revision of the teacher.")
    group.add_argument(
        "--teacher_dtype",
        type=str,
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="Dtype the teacher runs in, whatever --mixed_precision is (float32, as VideoREPA runs its ViT; half "
        "precision is about 2x faster on GPUs, but the tempered softmax of tau = 0.1 amplifies its rounding).",
    )
    group.add_argument("--teacher_num_frames", type=int, default=None, help="Teacher frames (clip frames - 1).")
    group.add_argument("--teacher_height", type=int, default=None, help="Teacher input height (--height / 3).")
    group.add_argument("--teacher_width", type=int, default=None, help="Teacher input width (--width / 3).")
    group.add_argument(
        "--trust_remote_code", action="store_true", help="Allow a teacher checkpoint's own code to run (off)."
    )


def add_mask_ratio_argument(parser: argparse._ActionsContainer) -> None:
    """`--tsa_mask_ratio`, the share `k` of M-TSA queries per frame (also recorded with precomputed masks)."""
    parser.add_argument(
        "--tsa_mask_ratio",
        "--mask_ratio",
        type=float,
        default=0.2,
        help="Share k of the most dynamic tokens per frame used as M-TSA queries (0.2).",
    )


def add_alignment_arguments(parser: argparse.ArgumentParser) -> None:
    """The alignment term of Eq. 14 (`AlignmentConfig`)."""
    group = parser.add_argument_group("alignment (TSA)")
    group.add_argument(
        "--alignment_loss",
        type=str,
        default="m-tsa",
        choices=[*ALIGNMENT_LOSSES, "none"],
        help="'m-tsa' (default, the paper), 'tsa' (every token a query), the baselines 'trd' (VideoREPA), 'repa' "
        "and 'crepa' (cross-frame REPA), or 'none' (plain fine-tuning).",
    )
    group.add_argument(
        "--alignment_depth",
        type=int,
        default=None,
        help="Align the output of this transformer block, counted from 1 (default: the family's, e.g. 18 of 30 for "
        "CogVideoX-2B, the paper's best).",
    )
    group.add_argument("--alignment_weight", type=float, default=0.5, help="lambda of Eq. 14 (0.5).")
    group.add_argument(
        "--tsa_temperature",
        type=float,
        default=0.1,
        help="Softmax temperature tau (0.1); lower sharpens correspondences, the paper found 0.1 best.",
    )
    add_mask_ratio_argument(group)
    group.add_argument(
        "--crepa_adjacent_distance",
        type=int,
        default=1,
        help="CREPA: align each frame with the teacher's frames at this distance too (1; 0 is per-frame REPA).",
    )
    group.add_argument(
        "--crepa_temporal_decay",
        type=float,
        default=1.0,
        help="CREPA: a neighbour at distance d weighs exp(-d / this) (1.0).",
    )
    group.add_argument(
        "--crepa_cumulative_neighbors",
        action="store_true",
        help="CREPA: use every distance 1..--crepa_adjacent_distance, not that distance alone.",
    )
    group.add_argument(
        "--teacher_features_column",
        type=str,
        default=None,
        help=f"Column of precomputed teacher features; default: '{FEATURES_COLUMN}' when the dataset has it, else "
        "the teacher runs online.",
    )
    group.add_argument("--projector_hidden_dim", type=int, default=2048, help="Projector MLP width (2048).")
    group.add_argument(
        "--projector_learning_rate", type=float, default=None, help="Projector learning rate (--learning_rate)."
    )


# --- Flags -> library objects ------------------------------------------------------------------------------------


def clip_spec(args: argparse.Namespace) -> ClipSpec:
    """The `ClipSpec` of the clip flags."""
    return ClipSpec(
        height=args.height,
        width=args.width,
        max_num_frames=args.max_num_frames,
        skip_frames_start=args.skip_frames_start,
        skip_frames_end=args.skip_frames_end,
        reshape_mode=args.video_reshape_mode,
    )


def teacher_input(args: argparse.Namespace, clip: ClipSpec, config) -> TeacherInput:
    """The `TeacherInput` of the teacher flags for clips read as `clip` (the paper's rule, on the patch grid of the
    teacher whose `config` is given, for what is not given)."""
    sizes = patch_sizes(config)
    return TeacherInput.for_clip(
        clip.num_frames,
        clip.height,
        clip.width,
        teacher_num_frames=args.teacher_num_frames,
        teacher_height=args.teacher_height,
        teacher_width=args.teacher_width,
        patch_size=sizes["patch_size"],
        tubelet_size=sizes["tubelet_size"],
    )


def load_dataset(args: argparse.Namespace, **kwargs) -> datasets.Dataset:
    """The caption/video table the dataset flags name (`load_video_dataset`)."""
    return load_video_dataset(
        args.dataset_name,
        instance_data_root=args.instance_data_root,
        caption_column=args.caption_column,
        video_column=args.video_column,
        dataset_config_name=args.dataset_config_name,
        **kwargs,
    )


def training_options(args: argparse.Namespace) -> TrainingOptions:
    """The `TrainingOptions` of the model flags (`--max_sequence_length`, `--flow_*`, `--expert`)."""
    flow = FlowMatching(
        weighting_scheme=args.flow_weighting_scheme,
        logit_mean=args.flow_logit_mean,
        logit_std=args.flow_logit_std,
        mode_scale=args.flow_mode_scale,
        shift=args.flow_shift,
    )
    return TrainingOptions(max_sequence_length=args.max_sequence_length, flow_matching=flow, expert=args.expert)


def alignment_config(
    args: argparse.Namespace, spec: ModelSpec, clip: ClipSpec, table: datasets.Dataset
) -> AlignmentConfig | None:
    """The alignment flags checked against the student's `spec`, the teacher's config and the dataset's columns
    (`None` for `--alignment_loss none`); reads the teacher's config once, and no weight."""
    if args.alignment_loss == "none":
        return None
    depth = spec.default_depth if args.alignment_depth is None else args.alignment_depth
    spec.check_depth(depth)
    column = args.teacher_features_column
    if column is not None and column not in table.column_names:
        raise FlagError(
            f"--teacher_features_column {column!r} is not a column of the dataset ({table.column_names}); precompute "
            "it with `python -m diffusers_tsa.features`, or drop the flag to run the teacher online."
        )
    if column is None and FEATURES_COLUMN in table.column_names:
        column = FEATURES_COLUMN
    teacher, config, drop_first_frame = None, None, True
    if args.teacher_model_name_or_path is not None:
        config = teacher_config(
            args.teacher_model_name_or_path,
            trust_remote_code=args.trust_remote_code,
            revision=args.teacher_revision,
            cache_dir=args.cache_dir,
        )
        teacher = teacher_geometry(args.teacher_model_name_or_path, teacher_input(args, clip, config), config)
        drop_first_frame = teacher.input.drop_first_frame
    if column is not None:
        if args.random_flip or args.video_reshape_mode == "random":
            raise FlagError(
                "--random_flip and --video_reshape_mode random change the clip after its teacher features were "
                "precomputed; drop them, or run the teacher online (no --teacher_features_column)."
            )
        if args.alignment_loss == "m-tsa" and MASK_COLUMN not in table.column_names:
            raise FlagError(f"--alignment_loss m-tsa needs the '{MASK_COLUMN}' column next to '{column}'.")
        settings = precomputed_settings(table, column)
        grid, width = tuple(settings["grid"]), settings["hidden_size"]
        if teacher is not None and (teacher.grid, teacher.hidden_size) != (grid, width):
            raise FlagError(
                f"--teacher_features_column holds features on a {grid} grid of width {width}, but "
                f"--teacher_model_name_or_path with these sizes gives {teacher.grid} of width {teacher.hidden_size}; "
                "precompute again with the same teacher and --teacher_* flags."
            )
        given = {key: getattr(args, f"teacher_{key}") for key in ("num_frames", "height", "width")}
        check_precomputed_settings(
            settings,
            clip=clip,
            mask_ratio=args.tsa_mask_ratio,
            teacher_input={key: value for key, value in given.items() if value is not None},
        )
        drop_first_frame = settings["teacher_input"]["drop_first_frame"]
        teacher, config = None, None  # the targets come with each batch
    elif teacher is None:
        raise FlagError(
            f"--alignment_loss {args.alignment_loss} needs --teacher_model_name_or_path (to run the teacher online) "
            "or a dataset with precomputed teacher features (--teacher_features_column)."
        )
    else:
        grid, width = teacher.grid, teacher.hidden_size
    return AlignmentConfig(
        loss=args.alignment_loss,
        depth=depth,
        student_grid=spec.token_grid(clip.num_frames, clip.height, clip.width),
        student_width=spec.hidden_size,
        teacher_grid=grid,
        teacher_width=width,
        weight=args.alignment_weight,
        temperature=args.tsa_temperature,
        mask_ratio=args.tsa_mask_ratio,
        projector_hidden_dim=args.projector_hidden_dim,
        crepa_adjacent_distance=args.crepa_adjacent_distance,
        crepa_temporal_decay=args.crepa_temporal_decay,
        crepa_cumulative_neighbors=args.crepa_cumulative_neighbors,
        teacher=teacher,
        teacher_config=config,
        features_column=column,
        drop_first_frame=drop_first_frame,
    )


def precomputed_inputs(
    args: argparse.Namespace, spec: ModelSpec, clip: ClipSpec, table: datasets.Dataset
) -> dict | None:
    """The settings of the dataset's precomputed latents and prompt embeddings (`ModelInputs`), checked against the
    training flags; `None` when the dataset has none (the VAE and the text encoder then run at every step)."""
    if LATENTS_COLUMN not in table.column_names:
        return None
    if args.random_flip or args.video_reshape_mode == "random":
        raise FlagError(
            "--random_flip and --video_reshape_mode random change the clip after its latents were precomputed; drop "
            "them, or train on a dataset without the precomputed columns."
        )
    settings = inputs_settings(table)
    given = {"id_token": args.id_token, **{f"ClipSpec.{key}": value for key, value in asdict(clip).items()}}
    check_inputs_settings(settings, spec, given)
    return settings


def check_validation_video(video: str, alignment: AlignmentConfig | None) -> None:
    """`--validation_video` is a file, and the run has an online teacher to compute its targets."""
    if not Path(video).is_file():
        raise FlagError(f"--validation_video {video!r} is not a file; give a video clip, or drop the flag.")
    if alignment is None or alignment.teacher is None:
        raise FlagError(
            "--validation_video measures the alignment with the teacher online, and this run "
            f"{'has no alignment term' if alignment is None else 'reads precomputed teacher features'}: drop the flag "
            "(the probe then uses the dataset's first clip)."
        )


@dataclass(frozen=True)
class TrainingPlan:
    """Everything the training flags describe, read from the configs (student, teacher) and the dataset's table,
    and checked, before any weight is loaded.

    Attributes:
        spec (`ModelSpec`): the student checkpoint.
        clip (`ClipSpec`): how clips are read.
        table (`datasets.Dataset`): the caption/video table (with any precomputed columns).
        alignment (`AlignmentConfig`, *optional*): the alignment term; `None` for `--alignment_loss none`.
        options (`TrainingOptions`): the family's training options (text length, flow matching, expert).
        resume (`Path`, *optional*): the complete checkpoint to resume from (`None`: a new run).
        inputs (`dict`, *optional*): the settings of the table's precomputed latents and prompt embeddings
            (`ModelInputs`); `None` when the VAE and the text encoder encode each batch.
    """

    spec: ModelSpec
    clip: ClipSpec
    table: datasets.Dataset
    alignment: AlignmentConfig | None
    options: TrainingOptions
    resume: Path | None = None
    inputs: dict | None = None

    @property
    def inputs_columns(self) -> list[str]:
        """The table's model-input columns (`latent_moments` first); empty without precomputed inputs."""
        return list(self.inputs["columns"]) if self.inputs else []

    @property
    def needs_videos(self) -> bool:
        """Whether training decodes the clips: for the VAE, or for an online teacher."""
        return self.inputs is None or (self.alignment is not None and self.alignment.teacher is not None)


def plan_training(args: argparse.Namespace) -> TrainingPlan:
    """Reads every config the training flags name, once, and checks the flags against them (no weights).

    Raises:
        `FlagError`: naming the flag, the value and what would work.
    """
    with flag_errors():
        spec = load_spec(
            args.pretrained_model_name_or_path,
            family=args.model_family,
            revision=args.revision,
            cache_dir=args.cache_dir,
        )
        clip = clip_spec(args)
        spec.check_clip(clip.num_frames, clip.height, clip.width)
        options = training_options(args)
        spec.check_options(
            vae_slicing=args.enable_slicing,
            vae_tiling=args.enable_tiling,
            use_dynamic_cfg=args.use_dynamic_cfg,
            training=options,
        )
        spec = spec.for_training(options)
        table = load_dataset(args, cache_dir=args.cache_dir)
        inputs = precomputed_inputs(args, spec, clip, table)
        alignment = alignment_config(args, spec, clip, table)
        if getattr(args, "validation_video", None):
            check_validation_video(args.validation_video, alignment)
        if alignment is not None and alignment.features_column is not None:
            table = typed_precomputed_table(table, alignment.features_column)
        if inputs is not None:
            table = typed_inputs_table(table, inputs)
        resume = None
        if args.resume_from_checkpoint:
            resume = resolve_checkpoint(args.output_dir, args.resume_from_checkpoint)
        if resume is not None:  # every file the resumed run loads, present and not empty
            projector = PROJECTOR_FILES if alignment is not None else ()
            check_checkpoint(
                resume, [*spec.saved_files(args.training_mode), *projector, DataOrder.FILE_NAME, *ACCELERATE_FILES]
            )
        return TrainingPlan(spec, clip, table, alignment, options, resume, inputs)
