"""Generate a benchmark's videos with any model family the training script trains, a LoRA or a fine-tuned transformer.

Writes `OUTPUT_DIR/videos/*.mp4`, named by the benchmark's protocol (VideoPhy's videos that the protocol would give
one name get a hash of their prompt, see `video_filenames`; VBench's lie in one folder per prompt list, as VBench
evaluates them, `videos/{folder}/{prompt}-{i}.mp4`), and `OUTPUT_DIR/manifest.csv` (prompt, generation
prompt, file, seed, category, hard flag) that the evaluation commands read. Resumable: finished videos are skipped
(each is written to a temporary file and renamed when complete; a file that does not decode to the expected frame
count and size is generated again), provided the settings that shape the videos are
those recorded in `OUTPUT_DIR/generation_settings.json` by the first run; other settings are refused. Shardable:
`--shard i/n`, or launch with `accelerate launch -m eval.generate ...` to split the prompts across processes.

Example (the paper's settings are the defaults):

    python -m eval.prompt_files --output_dir prompts
    python -m eval.generate --benchmark videophy --pretrained_model_name_or_path THUDM/CogVideoX-2b \\
        --transformer cogvideox-2b-mtsa --prompts prompts/videophy/videophy.txt \\
        --upsampled_prompts prompts/videophy/videophy_detailed.txt --labels prompts/videophy/reference.csv \\
        --output_dir runs/mtsa/videophy

(`--lora` instead of `--transformer` loads a LoRA on the base.)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .common import (
    MANIFEST_NAME,
    VIDEOS_SUBDIR,
    EvalInputError,
    VideoRecord,
    decodes_as_expected,
    exit_on_user_error,
    is_complete_video,
    logger,
    positive_int,
    setup_logging,
    write_json,
    write_manifest,
)
from .prompts import BENCHMARKS, Benchmark, PromptEntry, load_prompts, video_filenames


if TYPE_CHECKING:
    import PIL.Image


_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
SETTINGS_NAME = "generation_settings.json"
# A video being written: `.{stem}.{pid}.tmp.mp4` next to it, renamed to `{stem}.mp4` when complete.
_TMP_SUFFIX = ".tmp.mp4"


def plan_videos(
    benchmark: Benchmark,
    entries: list[PromptEntry],
    seed: int,
    per_prompt: int,
    scheduler: str = "",
    protocol_only: bool = False,
    vae_tiling: bool | None = None,
) -> list[VideoRecord]:
    """Every video of the run: `per_prompt` per prompt, video `i` with seed `seed + i` (42 for the first), each
    with its own file (`video_filenames`; `protocol_only` refuses names the protocol would share), sampled with
    `scheduler` and decoded with VAE tiling `vae_tiling` (`None`: unknown)."""
    names = video_filenames(
        benchmark, [e.prompt for e in entries], per_prompt, protocol_only, folders=[e.folder for e in entries]
    )
    return [
        VideoRecord(
            e.prompt,
            e.generation_prompt,
            f"{VIDEOS_SUBDIR}/{name}",
            seed + i,
            e.category,
            e.is_hard,
            scheduler,
            vae_tiling,
        )
        for e, row in zip(entries, names)
        for i, name in enumerate(row)
    ]


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `i/n` (0 <= i < n) into `(i, n)`."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise EvalInputError(f"--shard {text!r}: expected `i/n`, e.g. 0/4 for the first of four shards.") from None
    if not 0 <= index < count:
        raise EvalInputError(f"--shard {text!r}: need 0 <= i < n.")
    return index, count


#: Library argument (as `diffusers_tsa` errors name it) -> this command's flag.
FLAGS = {
    "pretrained_model_name_or_path": "--pretrained_model_name_or_path",
    "family": "--model_family",
    "revision": "--revision",
    "max_sequence_length": "--max_sequence_length",
    "num_frames": "--num_frames",
    "height": "--height",
    "width": "--width",
    "vae_slicing": "--enable_slicing",
    "vae_tiling": "--enable_tiling",
    "use_dynamic_cfg": "--use_dynamic_cfg",
    "lora": "--lora",
    "transformer": "--transformer",
    "scheduler": "--scheduler",
}


def generation_settings(args: argparse.Namespace, spec):
    """The generation flags as the adapters take them, the text length resolved for `spec`'s family."""
    from diffusers_tsa.adapters import GenerationSettings

    return GenerationSettings(
        num_frames=args.num_frames,
        height=args.height,
        width=args.width,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        use_dynamic_cfg=args.use_dynamic_cfg,
        max_sequence_length=spec.resolve_max_sequence_length(args.max_sequence_length),
    )


def model_source(flag: str, value: str | None) -> str | None:
    """`value` of a model flag as a Hub id or an absolute local path (`None` stays `None`); a value that looks like a
    local path (`diffusers_tsa.paths`) and does not exist is refused before anything loads."""
    from diffusers_tsa.paths import looks_like_local_path

    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists():
        return os.path.abspath(path)
    if looks_like_local_path(value):
        raise EvalInputError(f"{flag} {value!r}: no such folder, nor a Hub id (`owner/name`); check the path.")
    return value


def resolve_vae_options(args: argparse.Namespace, spec) -> None:
    """Set `--enable_slicing` and `--enable_tiling` left unset (`None`) to the family's protocol
    (`spec.protocol_vae_tiling`: on for CogVideoX, as VideoREPA generates; off for the others)."""
    for flag in ("enable_slicing", "enable_tiling"):
        if getattr(args, flag) is None:
            setattr(args, flag, spec.protocol_vae_tiling)


def load_checked_spec(args: argparse.Namespace):
    """The base model's spec (its family's adapter, from its configs alone), checked against the generation flags
    (VAE slicing and tiling resolved to the family's protocol where not given), and the sampler the videos are
    generated with (`--scheduler`, by default the family's protocol)."""
    from diffusers_tsa.cli import flag_errors
    from diffusers_tsa.training.plan import plan_student

    for flag in ("--pretrained_model_name_or_path", "--lora", "--transformer"):
        model_source(flag, getattr(args, flag[2:]))
    with flag_errors(FLAGS):  # a folder or Hub id without a model_index.json is refused naming the flag
        spec = plan_student(args, args.num_frames, args.height, args.width, use_dynamic_cfg=args.use_dynamic_cfg).spec
        resolve_vae_options(args, spec)  # the protocol's values, which its family supports
        return spec, spec.sampler(args.scheduler)


def load_pipeline(spec, args: argparse.Namespace, scheduler: str):
    """The stock pipeline with the LoRA loaded or the fine-tuned transformer swapped in, as the training script's
    outputs load, sampling with `scheduler`."""
    import torch

    from diffusers_tsa.cli import flag_errors

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    subfolder = args.transformer_subfolder
    if args.transformer and subfolder is None and (Path(args.transformer) / "transformer" / "config.json").is_file():
        subfolder = "transformer"  # the training script's output folder
    with flag_errors(FLAGS):
        pipe = spec.load_trained_pipeline(
            lora=args.lora,
            transformer=args.transformer,
            transformer_subfolder=subfolder,
            lora_weight_name=args.lora_weight_name,
            lora_scale=args.lora_scale,
            variant=args.variant,
            dtype=getattr(torch, _DTYPES[args.dtype]),
            device=None if args.enable_model_cpu_offload else device,
        )
    spec.use_sampler(pipe, scheduler)
    if args.enable_slicing:
        pipe.vae.enable_slicing()
    if args.enable_tiling:
        pipe.vae.enable_tiling()
    if args.enable_model_cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def recorded_settings(args: argparse.Namespace, spec, scheduler: str) -> dict:
    """The settings that shape the videos, keyed by flag name (without `--`), as `generation_settings.json` records
    them: model and weights (local paths made absolute), whether upsampled prompts are used, sampler, clip, VAE
    tiling (it blends overlapping tiles, so it changes pixels), seeds. Settings that only split the work or save
    memory (`--shard`, `--device`, `--enable_slicing`, `--enable_model_cpu_offload`) or choose which videos to make
    (`--max_prompts`, `--num_videos_per_prompt`) are not recorded: they leave each video as it is."""
    return {
        "benchmark": args.benchmark,
        "pretrained_model_name_or_path": model_source(
            "--pretrained_model_name_or_path", args.pretrained_model_name_or_path
        ),
        "model_family": spec.family,
        "revision": args.revision,
        "variant": args.variant,
        "lora": model_source("--lora", args.lora),
        "lora_weight_name": args.lora_weight_name,
        "lora_scale": args.lora_scale,
        "transformer": model_source("--transformer", args.transformer),
        "transformer_subfolder": args.transformer_subfolder,
        "dtype": args.dtype,
        "no_upsampling": args.no_upsampling,
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "scheduler": scheduler,
        "use_dynamic_cfg": args.use_dynamic_cfg,
        "num_frames": args.num_frames,
        "height": args.height,
        "width": args.width,
        "fps": args.fps,
        "max_sequence_length": args.max_sequence_length,
        "enable_tiling": args.enable_tiling,
        "seed": args.seed,
    }


def check_settings(out: Path, settings: dict, plan: Sequence[VideoRecord]) -> None:
    """Record `settings` in `out/generation_settings.json`, or refuse when finished videos of `plan` there, which
    this run would keep, were generated with the other settings recorded there. Called before any model loads.

    Args:
        out (`Path`): the output folder.
        settings (`dict`): this run's `recorded_settings`.
        plan (`Sequence[VideoRecord]`): every video of the run, all shards.
    """
    path = out / SETTINGS_NAME
    recorded = _read_settings(path)
    finished = sum(is_complete_video(out / r.file) for r in plan)
    if recorded is None and finished:
        logger.warning(
            "%s has no %s (written elsewhere or by an older version): its %d finished videos are taken "
            "as generated with these settings",
            out,
            SETTINGS_NAME,
            finished,
        )
    differ = [
        f"--{k}: recorded {recorded.get(k)!r}, given {settings.get(k)!r}"
        for k in sorted(set(recorded or {}) | set(settings))
        if recorded and recorded.get(k) != settings.get(k)
    ]
    if differ and finished:
        raise EvalInputError(
            f"--output_dir {out} holds {finished} finished video(s) of this run generated with other settings "
            f"({'; '.join(differ)}). Rerun with the recorded settings to resume, give another --output_dir, or "
            f"delete {out} to start over."
        )
    if recorded != settings:  # a first run, or one that stopped before any video was finished
        write_json(path, settings)


def _read_settings(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalInputError(
            f"--output_dir {path.parent}: {path.name} is unreadable ({e}); delete it if the videos "
            "there match these settings, or give another --output_dir."
        ) from None


def generate(args: argparse.Namespace) -> list[VideoRecord]:
    """Write the manifest and the videos of this process's shard that are not complete yet; return the plan."""
    benchmark = BENCHMARKS[args.benchmark]
    index, count = _shard(args)
    entries = load_prompts(
        benchmark, args.prompts, args.upsampled_prompts, args.labels, args.split, not args.no_upsampling
    )
    if args.max_prompts is not None:
        entries = entries[: args.max_prompts]
    per_prompt = args.num_videos_per_prompt or benchmark.videos_per_prompt
    # Videos generated elsewhere (--manifest_only) are listed without reading the model: their sampler is unknown,
    # and their names are the protocol's.
    spec, scheduler = (None, args.scheduler or "") if args.manifest_only else load_checked_spec(args)
    if spec is not None and args.fps is None:
        args.fps = spec.fps  # the family's frame rate
    plan = plan_videos(
        benchmark,
        entries,
        args.seed,
        per_prompt,
        scheduler,
        protocol_only=args.manifest_only,
        vae_tiling=args.enable_tiling,
    )
    images = first_frames(args, spec, entries, plan, per_prompt)  # refused before any video is planned to disk
    out = Path(args.output_dir)
    if not args.manifest_only:
        check_settings(out, recorded_settings(args, spec, scheduler), plan)
    # Every shard writes the same manifest (atomically), so any shard alone leaves a usable folder.
    write_manifest(plan, out / MANIFEST_NAME)
    if args.manifest_only:
        return plan
    remove_stale_temporaries(out, plan[index::count])
    todo = [
        r
        for r in plan[index::count]
        if not decodes_as_expected(out / r.file, args.num_frames, args.height, args.width)
    ]
    broken = sum(is_complete_video(out / r.file) for r in todo)
    if broken:
        logger.warning(
            "%d finished video(s) of this shard do not decode as %d frames of %dx%d: they are generated again",
            broken,
            args.num_frames,
            args.height,
            args.width,
        )
    logger.info("%d videos planned, %d in this shard (%d/%d) still to generate", len(plan), len(todo), index, count)
    if not todo:
        return plan

    from diffusers_tsa.cli import translate
    from diffusers_tsa.data.truncation import PipelineTruncations

    pipe = load_pipeline(spec, args, scheduler)
    settings = generation_settings(args, spec)
    with PipelineTruncations().installed() as truncations:  # the pipeline's warning once, not once per prompt
        _generate_videos(
            spec, pipe, settings, todo, out, args, desc=f"{benchmark.name} shard {index}/{count}", images=images
        )
    if truncations.count > 1:
        logger.warning(translate(truncations.summary(settings.max_sequence_length)))
    return plan


def first_frames(
    args: argparse.Namespace, spec, entries: Sequence[PromptEntry], plan: Sequence[VideoRecord], per_prompt: int
) -> dict[str, str]:
    """An image-to-video run's first frame (a path or URL) of each planned video, by its file: `--image_dir/<i>.png`
    for the `i`-th prompt (from 0), else the prompt file's `image` column; `{}` for a text-to-video run (which
    ignores the column).

    Raises:
        `EvalInputError`: `--image_dir` without `--image_to_video`, `--image_to_video` without images, or a prompt
            without its image.
    """
    image_to_video = spec is not None and spec.image_to_video
    if not image_to_video:
        if args.image_dir is not None:
            raise EvalInputError(
                "--image_dir: the images are first frames of image-to-video runs; pass --image_to_video."
            )
        return {}
    if args.image_dir is not None:
        sources, where = [str(Path(args.image_dir) / f"{k}.png") for k in range(len(entries))], "--image_dir"
    elif any(entry.image for entry in entries):
        sources, where = [entry.image for entry in entries], "the prompt file's `image` column"
    else:
        raise EvalInputError(
            "--image_to_video: pass --image_dir, the folder of each prompt's first frame <i>.png, or give the prompt "
            "file an `image` column."
        )
    missing = [
        entry.prompt
        for entry, source in zip(entries, sources)
        if not source or ("://" not in source and not Path(source).is_file())
    ]
    if missing:
        fix = "one <i>.png per prompt (i from 0, in the prompt file's order)" if args.image_dir else "an image each"
        raise EvalInputError(
            f"{where}: {len(missing)} prompt(s) have no first frame, e.g. {missing[0]!r}; give {fix}."
        )
    return {record.file: sources[i // per_prompt] for i, record in enumerate(plan)}


def _generate_videos(
    spec, pipe, settings, todo: list[VideoRecord], out: Path, args, *, desc: str, images: dict[str, Path]
) -> None:
    """Generates and writes the videos of `todo` (each written to a temporary file, then moved into place), from
    the first frame `images` names for each file (image-to-video runs)."""
    import torch
    from diffusers.utils import export_to_video, load_image
    from tqdm.auto import tqdm

    from diffusers_tsa.storage import disk_full_is_one_line

    for record in tqdm(todo, desc=desc):
        generator = torch.Generator(device="cpu").manual_seed(record.seed)
        image = load_image(images[record.file]) if record.file in images else None
        frames = spec.generate(pipe, record.generation_prompt, settings, generator, image)
        final = out / record.file
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.stem}.{os.getpid()}{_TMP_SUFFIX}")
        intact = f"the finished videos in {out} are intact and a rerun resumes after them"
        with disk_full_is_one_line(record.file, out, intact):
            try:
                export_to_video(rounded_frames(frames), str(tmp), fps=args.fps)
            except Exception:
                tmp.unlink(missing_ok=True)
                raise
        os.replace(tmp, final)


def rounded_frames(frames: np.ndarray) -> list[PIL.Image.Image]:
    """Float frames `(T, H, W, 3)` in [0, 1] as 8-bit images, rounded to the nearest level as the pipelines'
    `output_type="pil"` rounds them (VideoREPA writes those); `export_to_video` would truncate float frames."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor.numpy_to_pil(np.asarray(frames))


def remove_stale_temporaries(out: Path, records: Sequence[VideoRecord]) -> list[Path]:
    """Delete the temporary files (`.{stem}.{pid}.tmp.mp4`) that a stopped run left for the videos of `records`
    (this shard's: a shard running elsewhere at the same time keeps its own); return the deleted paths."""
    stems: dict[Path, set[str]] = {}
    for record in records:
        final = out / record.file
        stems.setdefault(final.parent, set()).add(final.stem)
    removed = []
    for folder, wanted in stems.items():
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            name = path.name
            if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                stem = name[1 : -len(_TMP_SUFFIX)].rpartition(".")[0]
                if stem in wanted:
                    path.unlink()
                    removed.append(path)
    if removed:
        logger.info("removed %d unfinished temporary video(s) left by a stopped run in %s", len(removed), out)
    return removed


def _shard(args: argparse.Namespace) -> tuple[int, int]:
    if args.shard:
        return parse_shard(args.shard)
    if args.manifest_only:
        return 0, 1
    from accelerate import PartialState

    state = PartialState()
    if args.device is None:
        args.device = str(state.device)
    return state.process_index, state.num_processes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from diffusers_tsa.cli import add_student_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Model.
    add_student_arguments(parser, protocol_vae=True)
    parser.add_argument("--lora", default=None, help="LoRA weights to load on the base: Hub id or folder.")
    parser.add_argument(
        "--image_dir",
        default=None,
        help="With --image_to_video: the folder of each prompt's first frame, <i>.png for the i-th prompt (from 0); "
        "default: the prompt file's `image` column.",
    )
    parser.add_argument(
        "--lora_weight_name",
        default=None,
        help="File name of the LoRA weights when the folder holds several (default: autodetect).",
    )
    parser.add_argument("--lora_scale", type=float, default=1.0, help="Strength of the LoRA (default 1.0).")
    parser.add_argument(
        "--transformer",
        default=None,
        help="Fine-tuned transformer replacing the base one: Hub id or folder (a training output "
        "folder with transformer/ works as is).",
    )
    parser.add_argument("--transformer_subfolder", default=None, help="Subfolder of --transformer holding it.")
    parser.add_argument("--cache_dir", default=None, help="Where downloaded models are cached.")
    # Prompts.
    parser.add_argument(
        "--benchmark",
        required=True,
        choices=sorted(BENCHMARKS),
        help="Naming, seeds and videos per prompt follow this benchmark's protocol.",
    )
    parser.add_argument(
        "--prompts",
        default=None,
        help="Prompt file (.txt/.csv/.json/.jsonl) or Hub dataset; default: the benchmark's Hub "
        "dataset (VBench has none: give VBench_full_info.json).",
    )
    parser.add_argument(
        "--upsampled_prompts",
        default=None,
        help="Upsampled prompts: .txt line-aligned with --prompts, or a table with caption and "
        "upsampled_caption (NOVA's dense VBench prompts: prompt and dense_prompt).",
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="Table with caption and states_of_matter and/or is_hard (default: the benchmark's "
        "Hub dataset; 'none' to skip).",
    )
    parser.add_argument("--split", default=None, help="Split of the Hub datasets when they have several.")
    parser.add_argument(
        "--no_upsampling",
        action="store_true",
        help="Generate from the prompts themselves instead of the upsampled ones.",
    )
    parser.add_argument(
        "--max_prompts", type=positive_int, default=None, help="Only the first N prompts (for a quick try)."
    )
    # Generation (defaults: the paper's and VideoREPA's evaluation settings).
    parser.add_argument("--num_inference_steps", type=int, default=50, help="Denoising steps (default 50).")
    parser.add_argument("--guidance_scale", type=float, default=6.0, help="Classifier-free guidance (default 6).")
    parser.add_argument(
        "--scheduler",
        default=None,
        help="Sampler: the model family's protocol by default (CogVideoX: 'dpm', DPM-Solver with "
        "trailing timesteps, as VideoREPA samples for the paper; also 'ddim', or 'pipeline' for "
        "the checkpoint's own). Recorded in manifest.csv.",
    )
    parser.add_argument(
        "--use_dynamic_cfg",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CogVideoX's dynamic CFG (default: on for CogVideoX, as the paper samples).",
    )
    parser.add_argument("--num_frames", type=int, default=49, help="Frames per video (default 49).")
    parser.add_argument("--height", type=int, default=480, help="Height in pixels (default 480).")
    parser.add_argument("--width", type=int, default=720, help="Width in pixels (default 720).")
    parser.add_argument(
        "--fps",
        type=int,
        default=None,
        help="Frame rate of the written mp4 (default: the family's; 8 for CogVideoX, as the paper).",
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="Seed of each prompt's first video (default 42); video i uses seed + i."
    )
    parser.add_argument(
        "--num_videos_per_prompt",
        type=positive_int,
        default=None,
        help="Default: the benchmark's (1 for VideoPhy and VideoPhy2, 5 for VBench).",
    )
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16", help="Weights dtype (default bf16).")
    parser.add_argument("--device", default=None, help="Default: this process's accelerate device.")
    parser.add_argument("--enable_model_cpu_offload", action="store_true", help="Offload idle models to the CPU.")
    # Output.
    parser.add_argument("--output_dir", required=True, help="Folder for videos/ and manifest.csv.")
    parser.add_argument(
        "--shard",
        default=None,
        help="`i/n`: generate every n-th video starting at i (0-based), e.g. one shard per GPU "
        "or machine. Default: split across accelerate processes.",
    )
    parser.add_argument(
        "--manifest_only",
        action="store_true",
        help="Only write manifest.csv (e.g. for videos generated elsewhere with the same names).",
    )
    args = parser.parse_args(argv)
    if args.lora and args.transformer:
        parser.error("--lora and --transformer are exclusive: load a LoRA on the base, or a full fine-tune.")
    return args


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    generate(parse_args(argv))


if __name__ == "__main__":
    exit_on_user_error(main)
