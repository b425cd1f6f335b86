"""The flow that VideoPhy and VideoPhy2 share: prepare an index of the videos, run the evaluator, join its scores.

`prepare` checks that every video of the generation folder's manifest exists and writes `EVAL_DIR/videos.csv`
(absolute video path, prompt, category, hard flag): the evaluators' outputs are joined on that path, never on row
order. Each benchmark module adds its evaluator's input files, how to run it and how to read its output.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .common import (
    MANIFEST_NAME,
    EvalInputError,
    EvaluatorOutputError,
    check_complete,
    iter_csv_rows,
    listed,
    parse_bool,
    read_manifest,
    setup_logging,
    write_csv,
    write_json,
)


INDEX_NAME = "videos.csv"
_INDEX_COLUMNS = ("videopath", "prompt", "category", "is_hard")


@dataclasses.dataclass(frozen=True)
class IndexedVideo:
    """A prepared video: its absolute path (the join key) and the labels the metrics group by."""

    videopath: str
    prompt: str
    category: str
    is_hard: bool | None


def prepare_index(generation_dir: Path, eval_dir: Path) -> list[IndexedVideo]:
    """Check the generation folder is complete and write `eval_dir/videos.csv`; return its rows."""
    generation_dir = generation_dir.resolve()
    records = read_manifest(generation_dir / MANIFEST_NAME)
    check_complete(records, generation_dir)
    videos = [IndexedVideo(str(generation_dir / r.file), r.prompt, r.category, r.is_hard) for r in records]
    write_csv(
        eval_dir / INDEX_NAME,
        _INDEX_COLUMNS,
        [(v.videopath, v.prompt, v.category, "" if v.is_hard is None else str(v.is_hard).lower()) for v in videos],
    )
    return videos


def read_index(eval_dir: Path) -> list[IndexedVideo]:
    """The videos written by `prepare_index`."""
    path = eval_dir / INDEX_NAME
    if not path.is_file():
        raise EvalInputError(
            f"--eval_dir {eval_dir} has no {INDEX_NAME}: run `prepare` with this --eval_dir first, or give the "
            "--eval_dir that `prepare` wrote."
        )
    return [
        IndexedVideo(row["videopath"], row["prompt"], row["category"], parse_bool(row["is_hard"], f"{path}, line {n}"))
        for n, row in iter_csv_rows(path, header=_INDEX_COLUMNS)
    ]


def join_scores(
    videos: Sequence[IndexedVideo], rows: Sequence[tuple[int, str, float]], path: Path
) -> dict[str, float]:
    """Scores by video path from `(line, videopath, score)` rows of an evaluator output `path`.

    Every prepared video must have exactly one row and every row a prepared video; the error names the lines.
    """
    expected = {v.videopath for v in videos}
    scores: dict[str, float] = {}
    first_line: dict[str, int] = {}
    for line, videopath, score in rows:
        if videopath not in expected:
            raise EvaluatorOutputError(
                f"{path}, line {line}: video {videopath!r} was not prepared in this evaluation folder; "
                "was the evaluator given another input file?"
            )
        if videopath in scores:
            raise EvaluatorOutputError(
                f"{path}, lines {first_line[videopath]} and {line}: video {videopath!r} scored twice "
                "(VideoCon-Physics appends to its output): rerun `run`, which starts a fresh file."
            )
        scores[videopath], first_line[videopath] = score, line
    missing = sorted(expected - scores.keys())
    if missing:
        raise EvaluatorOutputError(
            f"{path} has no score for {len(missing)} of {len(expected)} videos:{listed(missing)}\n"
            "The evaluator stopped early: rerun `run`."
        )
    return scores


def parse_float(text: str, where: str, low: float, high: float) -> float:
    """A finite number in `[low, high]`, or an `EvaluatorOutputError` naming `where`."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also rejects nan
        raise EvaluatorOutputError(f"{where}: expected a score in [{low:g}, {high:g}], got {text!r}.")
    return value


def absolute_evaluator_paths(args: argparse.Namespace) -> None:
    """Makes `--evaluator_repo`, `--evaluator_python` and a local `--checkpoint` absolute: `run` starts the
    evaluator in its own script folder, where relative paths would point elsewhere. A bare command name (`python`)
    is looked up on `PATH`; symbolic links are kept, so a virtual environment's `python` stays that environment's."""
    args.evaluator_repo = Path(os.path.abspath(args.evaluator_repo.expanduser()))
    python = os.path.expanduser(args.evaluator_python)
    if os.sep not in python:
        found = shutil.which(python)
        if found is None:
            raise EvalInputError(f"--evaluator_python {python!r} is not on PATH: give the evaluator env's python.")
        python = found
    args.evaluator_python = os.path.abspath(python)
    checkpoint = Path(args.checkpoint).expanduser()
    if checkpoint.exists():  # a local folder; anything else (a Hub id) goes to the evaluator as given
        args.checkpoint = os.path.abspath(checkpoint)


def build_parser(
    description: str,
    evaluator: str,
    add_run_args: Callable[[argparse.ArgumentParser], None],
    add_prepare_args: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """The `prepare` / `run` / `score` command line shared by the VideoPhy-family modules."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help=f"Check the videos and write the {evaluator} input files.")
    prepare.add_argument(
        "--generation_dir",
        required=True,
        type=Path,
        help="Folder written by `python -m eval.generate` (manifest.csv and videos/).",
    )
    prepare.add_argument("--eval_dir", required=True, type=Path, help="Folder for the evaluator's inputs and outputs.")
    if add_prepare_args:
        add_prepare_args(prepare)
    run = commands.add_parser("run", help=f"Run {evaluator}'s own inference script in its environment.")
    run.add_argument("--eval_dir", required=True, type=Path, help="Folder written by `prepare`.")
    run.add_argument(
        "--evaluator_python",
        required=True,
        help="The `python` of the evaluator's environment, e.g. ~/envs/videophy/bin/python.",
    )
    run.add_argument(
        "--evaluator_repo", required=True, type=Path, help="A clone of https://github.com/Hritikbansal/videophy."
    )
    run.add_argument("--checkpoint", required=True, help=f"Local folder of the {evaluator} checkpoint.")
    add_run_args(run)
    score = commands.add_parser("score", help="Parse the evaluator's outputs and report the benchmark's metrics.")
    score.add_argument("--eval_dir", required=True, type=Path, help="Folder where `run` wrote the outputs.")
    score.add_argument("--method", default=None, help="Row label of the Markdown table (default: the folder name).")
    score.add_argument("--output_json", type=Path, default=None, help="Default: EVAL_DIR/scores.json.")
    return parser


def dispatch(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    prepare: Callable[[list[IndexedVideo], Path, argparse.Namespace], None],
    run: Callable[[argparse.Namespace], None],
    score: Callable[[list[IndexedVideo], Path], dict],
    render: Callable[[Sequence[tuple[str, Mapping]]], str],
) -> None:
    """Run the parsed subcommand: `prepare` and `score` get the index, `score` writes JSON and prints Markdown."""
    setup_logging()
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(prepare_index(args.generation_dir, args.eval_dir), args.eval_dir, args)
    elif args.command == "run":
        read_index(args.eval_dir)  # fail early when `prepare` was not run
        absolute_evaluator_paths(args)
        run(args)
    else:
        result = score(read_index(args.eval_dir), args.eval_dir)
        write_json(args.output_json or args.eval_dir / "scores.json", result)
        print(render([(args.method or args.eval_dir.resolve().name, result)]))
