"""VBench (paper Table 3): `run` in the user's VBench environment, `aggregate` into the leaderboard scores.

    python -m eval.vbench run --videos_dir runs/mtsa/vbench/videos --vbench_python ~/envs/vbench/bin/python \\
        --output_dir runs/mtsa/vbench/eval
    python -m eval.vbench aggregate runs/mtsa/vbench/eval/results_eval_results.json

`run` checks that every prompt of `VBench_full_info.json` that belongs to the chosen dimensions has its videos
`{folder}/{prompt}-{i}.mp4` (listing the missing ones), `folder` being the prompt list the dimension is evaluated on
(`eval.prompts.VBENCH_FOLDERS`, VBench's `dimension_to_folder.json`), then runs VBench's Python API
(`VBench(...).evaluate(..., mode="vbench_standard")`, once per folder) through a subprocess with the given Python,
on any device and any subset of dimensions, and aggregates its results. With `--static_filter DIR`, temporal
flickering is evaluated as VBench's prompt suite asks: on the first 5 static videos of each prompt among 25 in
`DIR`, which VBench's static filter (`vbench static_filter`, RAFT optical flow, on a GPU) selects. `aggregate` reads one or more results files (`{dimension: [score, per_video]}`)
and prints one JSON object: `total`, `quality` and `semantic` in percent as on the VBench leaderboard, each
dimension's raw score (`dimensions`, percent, as in Table 3) and normalised score (`normalized`, percent), printed
with one decimal as the tables give them (`scores.json` and `--output_json` keep full precision).

The aggregation is VBench's (`scripts/constant.py` and `scripts/cal_final_score.py` in Vchitect/VBench, not
shipped in the wheel): each dimension is normalised as (s - min) / (max - min) and weighted (dynamic degree 0.5,
others 1); Quality is the weighted mean of the seven quality dimensions, Semantic the mean of the nine semantic
ones, Total = (4 Quality + Semantic) / 5. A missing dimension counts as a raw score of 0, as VBench does (so its
normalised score is -min / (max - min)), and is named in a warning.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .common import (
    EvalInputError,
    EvaluatorFailedError,
    EvaluatorOutputError,
    exit_on_user_error,
    listed,
    logger,
    positive_int,
    rounded,
    setup_logging,
    write_json,
)
from .prompts import VBENCH_FOLDERS, read_table, vbench_filename


# dimension: (min, max) of VBench's normalisation.
NORMALIZATION = {
    "subject_consistency": (0.1462, 1.0),
    "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0),
    "motion_smoothness": (0.706, 0.9975),
    "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0),
    "imaging_quality": (0.0, 1.0),
    "object_class": (0.0, 1.0),
    "multiple_objects": (0.0, 1.0),
    "human_action": (0.0, 1.0),
    "color": (0.0, 1.0),
    "spatial_relationship": (0.0, 1.0),
    "scene": (0.0, 0.8222),
    "appearance_style": (0.0009, 0.2855),
    "temporal_style": (0.0, 0.364),
    "overall_consistency": (0.0, 0.364),
}
WEIGHTS = {d: 0.5 if d == "dynamic_degree" else 1.0 for d in NORMALIZATION}
QUALITY = (
    "subject_consistency",
    "background_consistency",
    "temporal_flickering",
    "motion_smoothness",
    "aesthetic_quality",
    "imaging_quality",
    "dynamic_degree",
)
SEMANTIC = (
    "object_class",
    "multiple_objects",
    "human_action",
    "color",
    "spatial_relationship",
    "scene",
    "appearance_style",
    "temporal_style",
    "overall_consistency",
)
QUALITY_WEIGHT, SEMANTIC_WEIGHT = 4.0, 1.0
DRIVER = Path(__file__).with_name("_vbench_driver.py")


#: Videos per temporal-flickering prompt that VBench's prompt suite asks for before its static filter keeps 5.
STATIC_FILTER_VIDEOS = 25


def expected_videos(
    full_info: Sequence[dict], dimensions: Sequence[str], per_prompt: int = 5, folders: bool = True
) -> list[str]:
    """Videos VBench looks for: `{folder}/{prompt}-{i}.mp4` for each prompt in any of `dimensions`, `folder` being
    the dimension's (`VBENCH_FOLDERS`), without repeats; only `{prompt}-{i}.mp4` when `folders` is `False`."""
    names = {}
    for i, entry in enumerate(full_info):
        if not isinstance(entry.get("prompt_en"), str) or not isinstance(entry.get("dimension"), list):
            raise EvalInputError(
                f"--full_info entry {i + 1} ({str(entry)[:100]}) lacks `prompt_en` (text) or `dimension` (a list): "
                "give VBench's VBench_full_info.json."
            )
        for dimension in (d for d in entry["dimension"] if d in dimensions):
            folder = f"{VBENCH_FOLDERS[dimension]}/" if folders else ""
            for k in range(per_prompt):
                names.setdefault(folder + vbench_filename(entry["prompt_en"], k), None)
    return list(names)


def check_videos_dir(videos_dir: Path, expected: Sequence[str], flag: str = "--videos_dir") -> None:
    """Raise listing the missing videos (paths relative to `videos_dir`), or the files that would confuse VBench (it
    takes the extension of the first file it lists, so each folder must hold only the `.mp4` videos)."""
    if not videos_dir.is_dir():
        raise EvalInputError(f"{flag} {videos_dir} is not a folder.")
    present, strays = set(), []
    for folder in sorted({name.rpartition("/")[0] for name in expected}):
        if (videos_dir / folder).is_dir():
            for path in (videos_dir / folder).iterdir():
                name = f"{folder}/{path.name}" if folder else path.name
                if path.name.endswith(".mp4"):
                    present.add(name)
                else:
                    strays.append(name)
    if strays:
        raise EvalInputError(f"{videos_dir} must hold only the .mp4 videos; move these away:{listed(sorted(strays))}")
    missing = [n for n in expected if n not in present]
    if missing:
        flat = "/" in missing[0] and any(p.suffix == ".mp4" for p in videos_dir.iterdir())
        hint = (
            f" ({videos_dir} holds .mp4 videos itself: VBench evaluates each dimension on the folder of its prompt "
            "list, `{folder}/{prompt}-{i}.mp4`, as eval.generate writes them.)"
            if flat
            else ""
        )
        raise EvalInputError(
            f"{len(missing)} of {len(expected)} VBench videos are missing in {videos_dir}:{listed(missing)}\n"
            f"Generate them (`python -m eval.generate --benchmark vbench` resumes) or choose fewer --dimensions.{hint}"
        )
    unused = len(present - set(expected))
    if unused:
        logger.info("%d videos in %s are not used by these dimensions", unused, videos_dir)


def evaluation_groups(
    videos_dir: Path, dimensions: Sequence[str], static_filtered: Path | None = None
) -> list[tuple[str, Path, list[str]]]:
    """`(name, folder, dimensions)` for each VBench evaluation: the dimensions evaluated on one folder of videos
    (`VBENCH_FOLDERS`), temporal flickering on `static_filtered` when given (the static filter's output)."""
    groups: dict[str, tuple[Path, list[str]]] = {}
    for dimension in dimensions:
        if static_filtered is not None and dimension == "temporal_flickering":
            name, folder = "static_filtered", static_filtered
        else:
            name = VBENCH_FOLDERS[dimension]
            folder = videos_dir / name
        groups.setdefault(name, (folder, []))[1].append(dimension)
    return [(name, folder, dims) for name, (folder, dims) in groups.items()]


def load_results(paths: Sequence[Path]) -> dict[str, float]:
    """Raw dimension scores from VBench results files; a dimension given twice must agree."""
    scores: dict[str, float] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        try:
            results = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise EvaluatorOutputError(f"{path}: not a readable VBench results JSON ({e}).") from None
        if not isinstance(results, dict):
            raise EvaluatorOutputError(f"{path}: expected an object {{dimension: [score, per_video]}}.")
        for dim, value in results.items():
            if dim not in NORMALIZATION:
                raise EvaluatorOutputError(f"{path}: unknown dimension {dim!r}; VBench's are {sorted(NORMALIZATION)}.")
            score = value[0] if isinstance(value, list) and value else value
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise EvaluatorOutputError(
                    f"{path}: {dim} should be [score, per_video] with a finite score, got {str(value)[:100]!r}."
                )
            if dim in scores and scores[dim] != score:
                raise EvaluatorOutputError(f"{dim} is {scores[dim]} in {origin[dim]} but {score} in {path}.")
            scores[dim], origin[dim] = float(score), path
    return scores


def aggregate(scores: dict[str, float]) -> dict:
    """VBench's Total, Quality and Semantic scores and every dimension, in percent."""
    missing = [d for d in NORMALIZATION if d not in scores]
    if missing:
        logger.warning("dimensions missing from the results count as 0: %s", ", ".join(missing))
    raw = {d: scores.get(d, 0.0) for d in NORMALIZATION}
    normalized = {d: (raw[d] - lo) / (hi - lo) for d, (lo, hi) in NORMALIZATION.items()}
    quality = sum(normalized[d] * WEIGHTS[d] for d in QUALITY) / sum(WEIGHTS[d] for d in QUALITY)
    semantic = sum(normalized[d] * WEIGHTS[d] for d in SEMANTIC) / sum(WEIGHTS[d] for d in SEMANTIC)
    total = (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)
    return {
        "benchmark": "vbench",
        "total": 100 * total,
        "quality": 100 * quality,
        "semantic": 100 * semantic,
        "dimensions": {d: 100 * scores[d] for d in NORMALIZATION if d in scores},
        "normalized": {d: 100 * v for d, v in normalized.items()},
        "missing": missing,
    }


def _default_full_info(python: str) -> str:
    """The `VBench_full_info.json` shipped inside the VBench package of the given environment."""
    code = "import os, vbench; print(os.path.join(os.path.dirname(vbench.__file__), 'VBench_full_info.json'))"
    found = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if found.returncode != 0:
        reason = (found.stderr.strip().splitlines() or ["no message"])[-1]
        raise EvalInputError(
            f"--vbench_python {python} cannot import vbench ({reason}): give the python of the environment where "
            "vbench is installed, or pass --full_info VBench_full_info.json."
        )
    return found.stdout.strip()


def run(args: argparse.Namespace) -> dict:
    """Check the videos, run VBench in its environment and aggregate its results."""
    if not Path(args.vbench_python).exists():
        raise EvalInputError(
            f"--vbench_python {args.vbench_python} does not exist: give the `python` of the VBench environment."
        )
    full_info_path = args.full_info or _default_full_info(args.vbench_python)
    full_info = read_table(full_info_path, flag="--full_info")
    unknown = sorted(set(args.dimensions) - set(NORMALIZATION))
    if unknown:
        raise EvalInputError(f"--dimensions {unknown} are not VBench dimensions; choose from {sorted(NORMALIZATION)}.")
    dimensions = list(args.dimensions)
    static_filtered = None
    if args.static_filter is not None:
        if "temporal_flickering" not in dimensions:
            raise EvalInputError("--static_filter selects temporal flickering's videos: add it to --dimensions.")
        dimensions.remove("temporal_flickering")
        flickering = expected_videos(full_info, ["temporal_flickering"], STATIC_FILTER_VIDEOS, folders=False)
        check_videos_dir(args.static_filter, flickering, "--static_filter")
        static_filtered = (args.output_dir / "static_filter" / "filtered_videos").resolve()
    check_videos_dir(args.videos_dir, expected_videos(full_info, dimensions, args.videos_per_prompt))
    groups = evaluation_groups(args.videos_dir.resolve(), args.dimensions, static_filtered)
    command = [
        args.vbench_python,
        str(DRIVER),
        "--full_info",
        str(Path(full_info_path).resolve()),
        "--output_dir",
        str(args.output_dir.resolve()),
        "--name",
        args.name,
    ]
    for name, folder, dims in groups:
        command += ["--group", name, str(folder), *dims]
    if static_filtered is not None:
        command += ["--static_filter", str(args.static_filter.resolve()), str(static_filtered.parent)]
    command += ["--device", args.device] if args.device else []
    logger.info("running %s", " ".join(command))
    status = subprocess.run(command).returncode
    if status != 0:
        raise EvaluatorFailedError(
            f"VBench exited with status {status} (its messages are above); check --vbench_python and --device."
        )
    result = aggregate(load_results([args.output_dir / f"{args.name}_eval_results.json"]))
    write_json(args.output_dir / "scores.json", result)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_p = commands.add_parser("run", help="Evaluate a folder of videos with VBench in its own environment.")
    run_p.add_argument(
        "--videos_dir",
        required=True,
        type=Path,
        help="Folder of `{folder}/{prompt}-{i}.mp4` videos, one folder per VBench prompt list "
        "(eval.generate's OUTPUT_DIR/videos).",
    )
    run_p.add_argument("--vbench_python", required=True, help="The `python` of the VBench environment.")
    run_p.add_argument("--output_dir", required=True, type=Path, help="Where VBench writes its results.")
    run_p.add_argument(
        "--full_info", default=None, help="VBench_full_info.json (default: the one inside the VBench package)."
    )
    run_p.add_argument(
        "--dimensions", nargs="+", default=list(NORMALIZATION), help="Dimensions to evaluate (default: all 16)."
    )
    run_p.add_argument(
        "--videos_per_prompt", type=positive_int, default=5, help="Videos per prompt to expect (default 5)."
    )
    run_p.add_argument(
        "--static_filter",
        type=Path,
        default=None,
        help=f"Folder of {STATIC_FILTER_VIDEOS} `{{prompt}}-{{i}}.mp4` videos per temporal-flickering prompt: "
        "temporal flickering is evaluated on the first 5 static ones of each, as VBench's static filter selects "
        "them (needs a GPU). Default: on the 5 videos of --videos_dir, as the paper's protocol (no filter).",
    )
    run_p.add_argument("--device", default=None, help="torch device for VBench (default: cuda if available).")
    run_p.add_argument("--name", default="results", help="VBench writes {name}_eval_results.json (default results).")
    agg = commands.add_parser("aggregate", help="Total, Quality and Semantic scores from VBench results files.")
    agg.add_argument("results", nargs="+", type=Path, help="VBench *_eval_results.json file(s), merged.")
    agg.add_argument("--output_json", type=Path, default=None, help="Also write the JSON there.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = parse_args(argv)
    if args.command == "run":
        result = run(args)
    else:
        result = aggregate(load_results(args.results))
        if args.output_json:
            write_json(args.output_json, result)
    json.dump(rounded(result), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    exit_on_user_error(main)
