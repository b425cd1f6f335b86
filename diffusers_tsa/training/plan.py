"""The training plan: every config the training flags name (student, teacher, dataset) read once, and the flags
checked against them, before any weight is loaded.

The functions here read an `argparse.Namespace` with the attributes the flag groups of `diffusers_tsa.cli` and the
training script define (`args.height`, `args.alignment_loss`, ...), so that a command and its tests plan from the
same parsed flags. Their errors are `UsageError`s naming the library's arguments (`` `features_column` ``,
`` `depth=99` ``); `diffusers_tsa.cli` turns them into the flags' names.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets

from ..adapters import ModelSpec, load_spec
from ..adapters.flow_matching import FlowMatching
from ..adapters.options import TrainingOptions
from ..alignment_weight import AlignmentWeight
from ..data import ClipSpec, check_some_clip_reads, load_video_dataset, use_video_backend
from ..data.columns import LATENTS_COLUMN
from ..errors import UsageError
from ..features import FEATURES_COLUMN, MASK_COLUMN
from ..features.precomputed import (
    check_inputs_settings,
    check_precomputed_settings,
    inputs_settings,
    precomputed_settings,
    typed_inputs_table,
    typed_precomputed_table,
)
from ..loss_registry import ALIGNMENT_LOSSES, LossOptions, WeightSchedule, options_of
from ..projector import PROJECTOR_FILES
from ..teachers import TeacherInput, teacher_config, teacher_geometry
from .alignment import AlignmentConfig
from .checkpoints import ACCELERATE_FILES, check_checkpoint, resolve_checkpoint
from .data import DataOrder
from .presets import AlignmentPreset, get_preset
from .resume import RUN_SETTINGS_FILE


def clip_spec(args: argparse.Namespace) -> ClipSpec:
    """The `ClipSpec` of the clip flags; `--video_backend` becomes the decoder of this process and its workers
    (`use_video_backend`)."""
    use_video_backend(args.video_backend)
    return ClipSpec(
        height=args.height,
        width=args.width,
        max_num_frames=args.max_num_frames,
        skip_frames_start=args.skip_frames_start,
        skip_frames_end=args.skip_frames_end,
        reshape_mode=args.video_reshape_mode,
    )


def teacher_input(args: argparse.Namespace, clip: ClipSpec, config, spec: ModelSpec | None = None) -> TeacherInput:
    """The `TeacherInput` of the teacher flags for clips read as `clip` (the paper's rule, on the patch grid of the
    teacher whose `config` is given, for what is not given); `--teacher_frames latent` and `pooled` read the
    student's latent frames from its `spec` (`latent`: `spec.teacher_latent_frames`, at most CogVideoX's 4 pixel
    frames a teacher frame; `pooled`: one per token frame)."""
    latent_frames = None
    if spec is not None:
        size = (clip.num_frames, clip.height, clip.width)
        latent = args.teacher_frames == "latent"
        latent_frames = spec.teacher_latent_frames(*size) if latent else spec.token_grid(*size)[0]
    return TeacherInput.for_teacher(
        config,
        clip.num_frames,
        clip.height,
        clip.width,
        teacher_num_frames=args.teacher_num_frames,
        teacher_height=args.teacher_height,
        teacher_width=args.teacher_width,
        frames=args.teacher_frames,
        latent_frames=latent_frames,
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


@dataclass(frozen=True)
class StudentPlan:
    """The student as the student flags (`diffusers_tsa.cli.add_student_arguments`) name it, checked.

    Attributes:
        spec (`ModelSpec`): the base model, read from its configs, as a run with `options` uses it
            (`ModelSpec.for_training`).
        options (`TrainingOptions`): the family's options (text length; flow matching and expert when training).
        depth (`int`): the aligned block, counted from 1 (the family's default when not given).
    """

    spec: ModelSpec
    options: TrainingOptions
    depth: int


def plan_student(
    args: argparse.Namespace,
    num_frames: int,
    height: int,
    width: int,
    *,
    options: TrainingOptions | None = None,
    use_dynamic_cfg: bool | None = None,
    depth: int | None = None,
) -> StudentPlan:
    """Reads the student's configs (no weights) and checks it against the clip size, its options and the block depth:
    one `load_spec` -> `check_clip` -> `check_options` -> `for_training` for every command.

    Args:
        args (`argparse.Namespace`): with the attributes of `add_student_arguments` (`pretrained_model_name_or_path`,
            `model_family`, `revision`, `max_sequence_length`, `enable_slicing`, `enable_tiling`) and `cache_dir`.
        num_frames (`int`), height (`int`), width (`int`): the clip or video size.
        options (`TrainingOptions`, *optional*): the family's options (default: the text length alone).
        use_dynamic_cfg (`bool`, *optional*): CogVideoX's dynamic guidance, for the commands that generate.
        depth (`int`, *optional*): the aligned block (default: the family's `default_depth`).

    Raises:
        `UsageError`: naming the argument, the value and what would work.
    """
    spec = load_spec(
        args.pretrained_model_name_or_path,
        family=args.model_family,
        revision=args.revision,
        cache_dir=args.cache_dir,
    )
    spec.check_clip(num_frames, height, width)
    if options is None:
        options = TrainingOptions(
            max_sequence_length=args.max_sequence_length,
            image_to_video=getattr(args, "image_to_video", False),
            first_frame_conditioning_p=getattr(args, "first_frame_conditioning_p", None),
        )
    spec.check_options(
        vae_slicing=args.enable_slicing,
        vae_tiling=args.enable_tiling,
        use_dynamic_cfg=use_dynamic_cfg,
        training=options,
    )
    spec = spec.for_training(options)
    depth = spec.default_depth if depth is None else depth
    spec.check_depth(depth)
    return StudentPlan(spec, options, depth)


def training_options(args: argparse.Namespace) -> TrainingOptions:
    """The `TrainingOptions` of the model flags (`--max_sequence_length`, `--flow_*`, `--expert`)."""
    flow = FlowMatching(
        weighting_scheme=args.flow_weighting_scheme,
        logit_mean=args.flow_logit_mean,
        logit_std=args.flow_logit_std,
        mode_scale=args.flow_mode_scale,
        shift=args.flow_shift,
    )
    return TrainingOptions(
        max_sequence_length=args.max_sequence_length,
        flow_matching=flow,
        expert=args.expert,
        image_to_video=getattr(args, "image_to_video", False),
        first_frame_conditioning_p=getattr(args, "first_frame_conditioning_p", None),
    )


def loss_options(args: argparse.Namespace, loss: str) -> LossOptions:
    """The options of the alignment loss `loss` as its flags set them (`diffusers_tsa.cli.add_loss_option_arguments`).

    Raises:
        `UsageError`: naming each option whose value fails its check.
    """
    return options_from_flags(args, ALIGNMENT_LOSSES[loss].options)


def options_from_flags(args: argparse.Namespace, options: type[LossOptions]) -> LossOptions:
    """An options dataclass of the loss registry (a loss's, or `WeightSchedule`) as its flags set it."""
    return options(**{option.name: getattr(args, option.dest) for option in options_of(options)})


def alignment_config(
    args: argparse.Namespace, student: StudentPlan, clip: ClipSpec, table: datasets.Dataset
) -> AlignmentConfig | None:
    """The alignment flags checked against the `student`, the teacher's config and the dataset's columns (`None` for
    `--alignment_loss none`); reads the teacher's config once, and no weight."""
    if args.alignment_loss == "none":
        return None
    options = loss_options(args, args.alignment_loss)
    spec, depth = student.spec, student.depth
    student_grid = spec.token_grid(clip.num_frames, clip.height, clip.width)
    common = {
        "loss": args.alignment_loss,
        "depth": depth,
        "student_grid": student_grid,
        "student_width": spec.hidden_size,
        "weight": args.alignment_weight,
        "schedule": options_from_flags(args, WeightSchedule),
        "options": options,
        "projector_hidden_dim": args.projector_hidden_dim,
        "projector_head": args.projector_head,
    }
    if args.alignment_target_depth is not None:  # the student's own deeper block: no teacher, no features
        spec.check_depth(args.alignment_target_depth)
        if args.teacher_model_name_or_path is not None or args.teacher_features_column is not None:
            raise UsageError(
                f"`target_depth={args.alignment_target_depth}` aligns to the student's own block: drop "
                "`teacher_model_name_or_path` and `features_column`."
            )
        return AlignmentConfig(
            **common,
            teacher_grid=student_grid,
            teacher_width=spec.hidden_size,
            target_depth=args.alignment_target_depth,
            drop_first_frame=False,
        )
    column = args.teacher_features_column
    if column is not None and column not in table.column_names:
        raise UsageError(
            f"`features_column` {column!r} is not a column of the dataset ({table.column_names}); precompute it with "
            "`python -m diffusers_tsa.features`, or leave it unset to run the teacher online."
        )
    if column is None and FEATURES_COLUMN in table.column_names:
        column = FEATURES_COLUMN
    teacher, config, drop_first_frame, settings = None, None, True, None
    if args.teacher_model_name_or_path is not None:
        config = teacher_config(
            args.teacher_model_name_or_path,
            trust_remote_code=args.trust_remote_code,
            revision=args.teacher_revision,
            cache_dir=args.cache_dir,
        )
        teacher = teacher_geometry(args.teacher_model_name_or_path, teacher_input(args, clip, config, spec), config)
        drop_first_frame = teacher.input.drop_first_frame
    if column is not None:
        if args.random_flip or args.video_reshape_mode == "random":
            raise UsageError(
                "`random_flip` and `ClipSpec.reshape_mode` random change the clip after its teacher features were "
                "precomputed; drop them, or run the teacher online (no `features_column`)."
            )
        if ALIGNMENT_LOSSES[args.alignment_loss].masked and MASK_COLUMN not in table.column_names:
            raise UsageError(f"`loss` {args.alignment_loss} needs the '{MASK_COLUMN}' column next to '{column}'.")
        settings = precomputed_settings(table, column)
        grid, width = tuple(settings["grid"]), settings["hidden_size"]
        if teacher is not None and (teacher.grid, teacher.hidden_size) != (grid, width):
            raise UsageError(
                f"`features_column` holds features on a {grid} grid of width {width}, but "
                f"`teacher_model_name_or_path` with these sizes gives {teacher.grid} of width {teacher.hidden_size}; "
                "precompute again with the same teacher and `TeacherInput` sizes."
            )
        given = {key: getattr(args, f"teacher_{key}") for key in ("num_frames", "height", "width")}
        given = {key: value for key, value in given.items() if value is not None}
        if args.teacher_frames == "latent":  # the student's token frames, frame 0 included, subdivided
            latent_frames = spec.teacher_latent_frames(clip.num_frames, clip.height, clip.width)
            given.update(num_frames=latent_frames, drop_first_frame=False)
        if args.teacher_frames == "pooled":  # every frame, averaged after the first per token frame
            pooling = (clip.num_frames - 1) // max(student_grid[0] - 1, 1)
            given.update(num_frames=clip.num_frames, drop_first_frame=False, frame_pooling=pooling)
        check_precomputed_settings(settings, clip=clip, options=options, teacher_input=given)
        drop_first_frame = settings["teacher_input"]["drop_first_frame"]
        teacher, config = None, None  # the targets come with each batch
    elif teacher is None:
        raise UsageError(
            f"`loss` {args.alignment_loss} needs `teacher_model_name_or_path` (to run the teacher online) or a "
            "dataset with precomputed teacher features (`features_column`)."
        )
    else:
        grid, width = teacher.grid, teacher.hidden_size
    return AlignmentConfig(
        **common,
        teacher_grid=grid,
        teacher_width=width,
        teacher=teacher,
        teacher_config=config,
        features_column=column,
        features_settings=settings,
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
        raise UsageError(
            "`random_flip` and `ClipSpec.reshape_mode` random change the clip after its latents were precomputed; "
            "drop them, or train on a dataset without the precomputed columns."
        )
    settings = inputs_settings(table)
    given = {"id_token": args.id_token, **{f"ClipSpec.{key}": value for key, value in asdict(clip).items()}}
    check_inputs_settings(settings, spec, given)
    return settings


def check_validation_video(video: str, alignment: AlignmentConfig | None) -> None:
    """`validation_video` is a file, and the run has an online teacher to compute its targets."""
    if not Path(video).is_file():
        raise UsageError(f"`validation_video` {video!r} is not a file; give a video clip, or leave it unset.")
    if alignment is None or alignment.teacher is None:
        raise UsageError(
            "`validation_video` measures the alignment with the teacher online, and this run "
            f"{'has no alignment term' if alignment is None else 'reads precomputed teacher features'}: leave it unset "
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
        fps (`int`): the frame rate of the validation videos (`validation_fps`, default: the family's `fps`).
        resume (`Path`, *optional*): the complete checkpoint to resume from (`None`: a new run).
        inputs (`dict`, *optional*): the settings of the table's precomputed latents and prompt embeddings
            (`ModelInputs`); `None` when the VAE and the text encoder encode each batch.
        preset (`AlignmentPreset`, *optional*): the `--alignment_preset` whose values are the flags' defaults.
    """

    spec: ModelSpec
    clip: ClipSpec
    table: datasets.Dataset
    alignment: AlignmentConfig | None
    options: TrainingOptions
    fps: int
    resume: Path | None = None
    inputs: dict | None = None
    preset: AlignmentPreset | None = None

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
        `UsageError`: naming the argument, the value and what would work.
    """
    clip = clip_spec(args)
    student = plan_student(
        args,
        clip.num_frames,
        clip.height,
        clip.width,
        options=training_options(args),
        use_dynamic_cfg=args.use_dynamic_cfg,
        depth=None if args.alignment_loss == "none" else args.alignment_depth,
    )
    spec = student.spec
    table = load_dataset(args, cache_dir=args.cache_dir)
    inputs = precomputed_inputs(args, spec, clip, table)
    alignment = alignment_config(args, student, clip, table)
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
        projector = (*PROJECTOR_FILES, AlignmentWeight.FILE_NAME) if alignment is not None else ()
        check_checkpoint(
            resume,
            [
                *spec.saved_files(args.training_mode),
                *projector,
                DataOrder.FILE_NAME,
                RUN_SETTINGS_FILE,
                *ACCELERATE_FILES,
            ],
        )
    preset = get_preset(args.alignment_preset) if getattr(args, "alignment_preset", None) else None
    fps = args.validation_fps or spec.fps
    plan = TrainingPlan(spec, clip, table, alignment, student.options, fps, resume, inputs, preset)
    if plan.needs_videos:
        check_some_clip_reads(table, clip)  # e.g. the default 49 frames on shorter clips, before any model loads
    return plan
