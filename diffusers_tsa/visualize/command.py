"""The work of `python -m diffusers_tsa.visualize` (whose flags it takes), imported once the flags parse."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .. import cli
from ..adapters import ADAPTERS, ModelAdapter, ModelSpec
from ..data import ClipSpec, read_video
from ..diagnostics import (
    alignment_agreement,
    correspondence_maps,
    query_tokens,
    salient_queries,
    student_features,
    teacher_frames,
)
from ..errors import UsageError, VideoDecodeError
from ..features import teacher_targets
from ..masking import motion_saliency_mask
from ..projector import PROJECTOR_SUBFOLDER, AlignmentProjector
from ..teachers import TeacherGeometry, load_teacher, teacher_config, teacher_geometry
from ..training.plan import StudentPlan, clip_spec, plan_student, teacher_input
from . import (
    correspondence_video,
    motion_mask_video,
    render_correspondence,
    render_motion_masks,
    require_matplotlib,
    save_mp4,
    save_png,
)


# --- Shared steps -----------------------------------------------------------------------------------------------


def _require_viz() -> None:
    try:
        require_matplotlib()
    except ImportError as err:
        raise UsageError(str(err)) from None


def _read_clip(args: argparse.Namespace) -> tuple[ClipSpec, torch.Tensor]:
    """The clip flags and the clip, `(1, T, C, H, W)` in [-1, 1] (the output flags checked first: before any weight
    is loaded)."""
    if args.fps <= 0 or args.num_columns < 1:
        raise cli.FlagError(f"--fps {args.fps:g} must be positive and --num_columns {args.num_columns} at least 1.")
    clip = clip_spec(args)
    try:
        return clip, read_video(args.video, clip)[None]
    except VideoDecodeError as err:
        raise cli.FlagError(f"--video: {err}") from None


def _teacher(args: argparse.Namespace, clip: ClipSpec):
    """The teacher's geometry for this clip and its config (no weights)."""
    config = teacher_config(
        args.teacher_model_name_or_path,
        trust_remote_code=args.trust_remote_code,
        revision=args.teacher_revision,
        cache_dir=args.cache_dir,
    )
    return teacher_geometry(args.teacher_model_name_or_path, teacher_input(args, clip, config), config), config


def _check_ratios(ratios: list[float]) -> list[float]:
    bad = [r for r in ratios if not 0 < r <= 1]
    if bad:
        raise cli.FlagError(f"--tsa_mask_ratio {bad[0]} must be in (0, 1] (0.2 keeps the top 20 % of each frame).")
    return ratios


def _output(args: argparse.Namespace, suffix: str) -> Path:
    return Path(args.output_dir) / f"{Path(args.video).stem}_{suffix}"


# --- mask -----------------------------------------------------------------------------------------------------


def run_mask(args: argparse.Namespace) -> list[Path]:
    """Writes the motion-mask contact sheet (PNG) and video (mp4); returns their paths."""
    _require_viz()
    ratios = _check_ratios(args.tsa_mask_ratio)
    clip, video = _read_clip(args)
    geometry, _ = _teacher(args, clip)
    seen = teacher_frames(video, geometry.input)[0]  # what the mask is computed on, as in training
    masks = torch.stack([motion_saliency_mask(seen[None], tubelet=geometry.tubelet, ratio=r)[0] for r in ratios])
    shown = teacher_frames(video, geometry.input, size=(clip.height, clip.width))[0]
    name = _output(args, "motion_mask")
    return [
        save_png(render_motion_masks(shown, masks, ratios, num_columns=args.num_columns), f"{name}.png"),
        save_mp4(motion_mask_video(shown, masks, ratios), f"{name}.mp4", fps=args.fps),
    ]


# --- correspondence -----------------------------------------------------------------------------------------------


def _queries(args: argparse.Namespace, clip: ClipSpec, geometry: TeacherGeometry, seen: torch.Tensor) -> list:
    """The `(f, h, w)` query tokens: the tokens under `--query` points, or the `--top_k` most dynamic ones."""
    num_frames, grid_h, grid_w = geometry.grid
    if not 0 <= args.query_frame < num_frames:
        raise cli.FlagError(
            f"--query_frame {args.query_frame} must be a teacher token frame in [0, {num_frames - 1}]."
        )
    if not args.query:
        return salient_queries(seen, geometry.tubelet, frame=args.query_frame, k=args.top_k)
    queries = []
    for text in args.query:
        try:
            x, y = (int(v) for v in text.split(","))
        except ValueError:
            raise cli.FlagError(f"--query {text!r} must be two integer pixel coordinates X,Y, e.g. 120,64.") from None
        if not (0 <= x < clip.width and 0 <= y < clip.height):
            raise cli.FlagError(
                f"--query {text} is outside the clip, which is read at {clip.width}x{clip.height} (--width x "
                f"--height): X must be in [0, {clip.width - 1}] and Y in [0, {clip.height - 1}]."
            )
        queries.append((args.query_frame, y * grid_h // clip.height, x * grid_w // clip.width))
    return queries


def _run_weights(spec: ModelSpec, run_dir: str) -> dict[str, str]:
    """`load_trained_pipeline`'s `lora=` or `transformer=` for a training run's folder."""
    run = Path(run_dir)
    if not run.is_dir():
        raise cli.FlagError(f"--run_dir {run_dir!r} is not a folder; pass a training run's --output_dir.")
    for mode, key in (("lora", "lora"), ("full", "transformer")):
        files = spec.saved_files(mode)
        if files and all((run / f).is_file() for f in files):
            return {key: str(run)}
    raise cli.FlagError(
        f"--run_dir {run_dir!r} holds neither a LoRA ({', '.join(spec.saved_files('lora'))}) nor a full "
        f"transformer ({', '.join(spec.saved_files('full')) or 'transformer/'}); pass a training run's --output_dir "
        "or one of its checkpoint-* folders."
    )


def _projector(run_dir: str | None, expected: dict) -> AlignmentProjector | None:
    """The run's projector, refused when it was trained for other grids or widths than `expected`."""
    folder = Path(run_dir or "") / PROJECTOR_SUBFOLDER
    if run_dir is None or not (folder / "config.json").is_file():
        return None
    projector = AlignmentProjector.from_pretrained(folder)
    found = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in projector.config.items() if k in expected}
    if found != expected:
        raise cli.FlagError(
            f"The projector in {folder} was trained for {found}, but this clip, model and teacher give {expected}: "
            "pass the run's --height, --width, --max_num_frames and --teacher_* flags."
        )
    return projector


def _load_student(
    args: argparse.Namespace, student: StudentPlan, weights: dict[str, str], device: str
) -> ModelAdapter:
    """The base model with the run's trained `weights` (`_run_weights`), as `load_trained_pipeline` loads them, as an
    adapter."""
    spec = student.spec
    pipe = spec.load_trained_pipeline(**weights, variant=args.variant, device=device)
    adapter_class = ADAPTERS[spec.family]
    adapter = adapter_class(spec, options=student.options, **adapter_class.pipeline_components(pipe))
    adapter.configure_vae(slicing=args.enable_slicing, tiling=args.enable_tiling)
    steps = adapter.scheduler.config.num_train_timesteps
    if not 0 <= args.timestep < steps:
        raise cli.FlagError(f"--timestep {args.timestep} must be in [0, {steps}).")
    return adapter


def _report_agreement(student, teacher, mask, temperatures, args) -> None:
    """Prints top-1 agreement and tempered KL on every token and on the M-TSA queries."""
    for label, query_mask in (("all tokens", None), (f"M-TSA queries (k = {args.tsa_mask_ratio:g})", mask)):
        results = [alignment_agreement(student, teacher, tau=tau, query_mask=query_mask) for tau in temperatures]
        kls = ", ".join(f"{r.kl:.4g} at tau={tau:g}" for r, tau in zip(results, temperatures))
        print(f"student vs teacher, {label}: top-1 agreement {results[0].top1:.3f}; KL {kls}")


def _plan_student(args: argparse.Namespace, clip: ClipSpec, geometry: TeacherGeometry):
    """The student, its trained weights and projector, every flag checked before any weight is loaded."""
    student = plan_student(args, clip.num_frames, clip.height, clip.width, depth=args.alignment_depth)
    spec = student.spec
    if args.timestep < 0:
        raise cli.FlagError(f"--timestep {args.timestep} must be at least 0.")
    weights = _run_weights(spec, args.run_dir) if args.run_dir else {}
    projector = _projector(
        args.run_dir,
        {
            "in_dim": spec.hidden_size,
            "out_dim": geometry.hidden_size,
            "student_grid": list(spec.token_grid(clip.num_frames, clip.height, clip.width)),
            "teacher_grid": list(geometry.grid),
        },
    )
    return student, weights, projector


def run_correspondence(args: argparse.Namespace) -> list[Path]:
    """Writes, per query, the correspondence contact sheet (PNG) and video (mp4); returns their paths."""
    _require_viz()
    temperatures = args.temperatures
    if min(temperatures) <= 0:
        raise cli.FlagError(f"--temperatures {' '.join(map(str, temperatures))}: every temperature must be positive.")
    _check_ratios([args.tsa_mask_ratio])
    if args.run_dir and not args.pretrained_model_name_or_path:
        raise cli.FlagError("--run_dir needs the base model it was trained from: --pretrained_model_name_or_path.")
    clip, video = _read_clip(args)
    geometry, config = _teacher(args, clip)
    seen = teacher_frames(video, geometry.input)[0]
    queries = _queries(args, clip, geometry, seen)
    student, weights, projector = (
        _plan_student(args, clip, geometry) if args.pretrained_model_name_or_path else (None, {}, None)
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = load_teacher(
        geometry.name,
        geometry.input,
        config=config,
        dtype=getattr(torch, args.teacher_dtype),
        device=device,
        trust_remote_code=args.trust_remote_code,
        revision=args.teacher_revision,
        cache_dir=args.cache_dir,
    )
    features, mask = teacher_targets(teacher, video, args.tsa_mask_ratio)
    grids = {"teacher": features.float()}
    if student is not None:
        adapter = _load_student(args, student, weights, device)
        torch.manual_seed(args.seed)
        grids["student"] = student_features(
            adapter,
            video.to(device),
            depth=student.depth,
            timestep=args.timestep,
            prompts=args.prompt,
            projector=None if projector is None else projector.to(device),
            teacher_grid=geometry.grid,
            drop_first_frame=geometry.input.drop_first_frame,
        )
        if projector is None:
            print(
                f"No projector (--run_dir with {PROJECTOR_SUBFOLDER}/): the student maps use the raw tokens of block "
                f"{student.depth}, area-resampled to the teacher grid."
            )
        else:
            _report_agreement(grids["student"], grids["teacher"], mask, temperatures, args)

    index = query_tokens(geometry.grid, queries)
    maps = {name: correspondence_maps(grid[0], index, tau=temperatures) for name, grid in grids.items()}
    shown = teacher_frames(video, geometry.input, size=(clip.height, clip.width))[0]
    paths = []
    student_source = f", the student of {args.run_dir}" if args.run_dir else ""
    for q, query in enumerate(queries):
        per_query = {name: m[:, q] for name, m in maps.items()}
        name = _output(args, "correspondence_f{}_h{}_w{}".format(*query))
        title = f"Correspondences of query token {query} in {Path(args.video).name}{student_source}"
        picture = render_correspondence(
            shown, per_query, query, temperatures, num_columns=args.num_columns, title=title
        )
        frames = correspondence_video(shown, per_query, query, temperatures, title=title)
        paths += [
            save_png(picture, f"{name}.png"),
            save_mp4(frames, f"{name}.mp4", fps=args.fps / geometry.tubelet_size),
        ]
    return paths
