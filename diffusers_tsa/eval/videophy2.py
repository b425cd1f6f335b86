"""VideoPhy2 with VideoPhy2-AutoEval (paper Table 2): `prepare`, `run` and `score`.

    python -m eval.videophy2 prepare --generation_dir runs/mtsa/videophy2 --eval_dir runs/mtsa/videophy2/eval
    python -m eval.videophy2 run --eval_dir runs/mtsa/videophy2/eval --evaluator_python ~/envs/videophy/bin/python \\
        --evaluator_repo ~/src/videophy --checkpoint ~/ckpt/videophy_2_auto
    python -m eval.videophy2 score --eval_dir runs/mtsa/videophy2/eval --method "+ M-TSA"

`prepare` writes `input.csv` (header `caption,videopath`, as the benchmark's `VIDEOPHY2/examples/sa_pc.csv`).
`run` calls `VIDEOPHY2/inference.py --task sa` and `--task pc`: the script asks its own question (`template.py`,
PROMPT_SA with the caption, PROMPT_PHYSICS), generates greedily and parses the text into a score with the
benchmark's rule: the first of "zero".."five", "0".."5" found in the lower-cased answer, else its digits if they
form 0-5, else 0 (it prints "Could not parse"). It writes the input table with an unnamed index column and a
`score` column (`,caption,videopath,score`, scores like `4.0`). `score` accepts only integral scores 0-5 (0 is
that fallback and counts as a failure, as in the benchmark; how many is reported) and reports SA, PC (shares
>= 4), Joint (both >= 4), the mean scores, and the same on the hard subset when the prompts mark it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Mapping, Sequence

from .common import (
    EvaluatorOutputError,
    exit_on_user_error,
    iter_csv_rows,
    percent,
    run_evaluator,
    write_csv,
)
from .physics import IndexedVideo, build_parser, dispatch, join_scores, parse_float
from .report import render_videophy2


logger = logging.getLogger("eval.videophy2")

INPUT_NAME = "input.csv"
OUTPUTS = {"sa": "output_sa.csv", "pc": "output_pc.csv"}
SCRIPT = Path("VIDEOPHY2/inference.py")
THRESHOLD = 4
UNPARSED = 0  # the evaluator's score when it cannot read a number in its own answer


def prepare(videos: list[IndexedVideo], eval_dir: Path, args: argparse.Namespace | None = None) -> None:
    """Write the AutoEval input file (the evaluator builds its SA and PC questions from the caption)."""
    write_csv(eval_dir / INPUT_NAME, ("caption", "videopath"), [(v.prompt, v.videopath) for v in videos])
    logger.info("wrote %s for %d videos", eval_dir / INPUT_NAME, len(videos))


def run(args: argparse.Namespace) -> None:
    """Run VideoPhy2-AutoEval for the SA and PC tasks."""
    for task, output in OUTPUTS.items():
        run_evaluator(
            args.evaluator_python,
            args.evaluator_repo / SCRIPT,
            [
                "--input_csv",
                str((args.eval_dir / INPUT_NAME).resolve()),
                "--task",
                task,
                "--output_csv",
                str((args.eval_dir / output).resolve()),
                "--checkpoint",
                args.checkpoint,
                "--num_frames",
                str(args.num_frames),
            ],
        )


def read_output(path: Path, videos: Sequence[IndexedVideo]) -> dict[str, int]:
    """Scores by video path from an AutoEval output; each score must be an integer 0-5."""
    if not path.is_file():
        raise EvaluatorOutputError(f"No evaluator output at {path}: run `python -m eval.videophy2 run` first.")
    rows = []
    for line, row in iter_csv_rows(path, header=("videopath", "score")):
        where = f"{path}, line {line}"
        value = parse_float(row["score"], where, 0, 5)
        if value != int(value):
            raise EvaluatorOutputError(f"{where}: AutoEval scores are integers 0-5, got {row['score']!r}.")
        rows.append((line, row["videopath"], int(value)))
    return join_scores(videos, rows, path)


def _subset(group: Sequence[IndexedVideo], sa: Mapping[str, int], pc: Mapping[str, int]) -> dict:
    n = len(group)
    good_sa = [sa[v.videopath] >= THRESHOLD for v in group]
    good_pc = [pc[v.videopath] >= THRESHOLD for v in group]
    return {
        "n": n,
        "joint": percent(sum(a and b for a, b in zip(good_sa, good_pc)), n),
        "sa": percent(sum(good_sa), n),
        "pc": percent(sum(good_pc), n),
        "sa_mean": sum(sa[v.videopath] for v in group) / n,
        "pc_mean": sum(pc[v.videopath] for v in group) / n,
    }


def metrics(videos: Sequence[IndexedVideo], sa: Mapping[str, int], pc: Mapping[str, int]) -> dict:
    """Joint, SA and PC in percent (scores >= 4) and mean scores, on all videos and on the hard subset."""
    subsets = {"all": _subset(videos, sa, pc)}
    hard = [v for v in videos if v.is_hard]
    if hard:
        subsets["hard"] = _subset(hard, sa, pc)
    elif all(v.is_hard is None for v in videos):
        logger.info("the prompts do not mark the hard subset: reporting all videos only")
    unparsed = {task: sum(s[v.videopath] == UNPARSED for v in videos) for task, s in (("sa", sa), ("pc", pc))}
    if any(unparsed.values()):
        logger.warning("the evaluator could not parse its answer for %s videos (scored 0)", unparsed)
    return {"benchmark": "videophy2", "subsets": subsets, "unparsed": unparsed}


def score(videos: list[IndexedVideo], eval_dir: Path) -> dict:
    """Parse both outputs of `run` and compute the metrics."""
    sa, pc = (read_output(eval_dir / OUTPUTS[task], videos) for task in ("sa", "pc"))
    return metrics(videos, sa, pc)


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_frames", type=int, default=32, help="Frames the evaluator samples (default 32).")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__, "VideoPhy2-AutoEval", _add_run_args)
    dispatch(parser, argv, prepare, run, score, render_videophy2)


if __name__ == "__main__":
    exit_on_user_error(main)
