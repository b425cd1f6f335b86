"""VideoPhy with VideoCon-Physics (paper Table 1): `prepare`, `run` and `score`.

    python -m eval.videophy prepare --generation_dir runs/mtsa/videophy --eval_dir runs/mtsa/videophy/eval
    python -m eval.videophy run --eval_dir runs/mtsa/videophy/eval --evaluator_python ~/envs/videophy/bin/python \\
        --evaluator_repo ~/src/videophy --checkpoint ~/ckpt/videocon_physics
    python -m eval.videophy score --eval_dir runs/mtsa/videophy/eval --method "+ M-TSA"

`prepare` writes `sa_testing.csv` and `physics_testing.csv` (header `videopath,caption`, the caption being the
evaluator's full question), as the benchmark's `utils/prepare_data.py` does. The SA question quotes the caption cut
at its first period, as VideoREPA's evaluation builds it for the paper's Table 1 (`--sa_caption full` quotes it
whole, as the evaluator's own example does). `run` calls VideoCon-Physics'
`videocon/training/pipeline_video/entailment_inference.py`, which appends header-less rows
`videopath,question,score` with score = P(yes) / (P(yes) + P(no)). `score` reports SA and PC, the share of
videos scoring >= 0.5, overall and per `states_of_matter`.
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
    iter_headerless_rows,
    percent,
    run_evaluator,
    write_csv,
)
from .physics import IndexedVideo, build_parser, dispatch, join_scores, parse_float
from .report import render_videophy


logger = logging.getLogger("eval.videophy")

# The question templates of VideoCon-Physics, verbatim from Hritikbansal/videophy `utils/constants.py`
# (PROMPT_VTA for semantic adherence, PROMPT_PHYSICS for physical commonsense); note the space after "AI:".
_PREAMBLE = (
    "The following is a conversation between a curious human and AI assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.\nHuman: <|video|>\n"
)
SA_TEMPLATE = _PREAMBLE + 'Human: Does this video entail the description: "{caption}"?\nAI: '
PC_QUESTION = _PREAMBLE + "Human: Does this video follow the physical laws?\nAI: "

CATEGORIES = ("solid_solid", "solid_fluid", "fluid_fluid")
THRESHOLD = 0.5
# (input written by `prepare`, output written by the evaluator), per metric.
FILES = {
    "sa": ("sa_testing.csv", "videocon_physics_sa_testing.csv"),
    "pc": ("physics_testing.csv", "videocon_physics_pc_testing.csv"),
}
SCRIPT = Path("videocon/training/pipeline_video/entailment_inference.py")


#: How the SA question quotes a caption: cut at its first period (VideoREPA's `caption.strip().split('.')[0]`, the
#: paper's Table 1), or whole (the evaluator's own example).
SA_CAPTIONS = ("first_sentence", "full")


def question(metric: str, caption: str, sa_caption: str = "first_sentence") -> str:
    """The evaluator's question for `metric` (`sa` or `pc`) about a video of `caption`."""
    if metric == "pc":
        return PC_QUESTION
    return SA_TEMPLATE.format(caption=caption.strip().split(".")[0] if sa_caption == "first_sentence" else caption)


def prepare(videos: list[IndexedVideo], eval_dir: Path, args: argparse.Namespace | None = None) -> None:
    """Write the SA and PC input files of VideoCon-Physics."""
    sa_caption = args.sa_caption if args is not None else SA_CAPTIONS[0]
    for metric, (name, _) in FILES.items():
        rows = [(v.videopath, question(metric, v.prompt, sa_caption)) for v in videos]
        write_csv(eval_dir / name, ("videopath", "caption"), rows)
    logger.info("wrote %s for %d videos in %s", " and ".join(n for n, _ in FILES.values()), len(videos), eval_dir)


def prepared_questions(eval_dir: Path, metric: str) -> dict[str, str]:
    """The question `prepare` wrote for each video path in `eval_dir`'s input file of `metric`."""
    path = eval_dir / FILES[metric][0]
    if not path.is_file():
        raise EvaluatorOutputError(f"No {path.name} in {eval_dir}: run `python -m eval.videophy prepare` first.")
    return {row["videopath"]: row["caption"] for _, row in iter_csv_rows(path, header=("videopath", "caption"))}


def run(args: argparse.Namespace) -> None:
    """Run VideoCon-Physics on both input files, each into a fresh output file (the script appends)."""
    for name, output in FILES.values():
        out = (args.eval_dir / output).resolve()
        if out.exists():
            logger.info("removing the previous output %s", out)
            out.unlink()
        run_evaluator(
            args.evaluator_python,
            args.evaluator_repo / SCRIPT,
            [
                "--input_csv",
                str((args.eval_dir / name).resolve()),
                "--output_csv",
                str(out),
                "--checkpoint",
                args.checkpoint,
                "--batch_size",
                str(args.batch_size),
            ],
        )


def read_output(path: Path, videos: Sequence[IndexedVideo], metric: str) -> dict[str, float]:
    """Scores by video path from a VideoCon-Physics output; each row's question must be the one `prepare` wrote in
    the same folder."""
    if not path.is_file():
        raise EvaluatorOutputError(f"No evaluator output at {path}: run `python -m eval.videophy run` first.")
    asked_for = prepared_questions(path.parent, metric)
    rows = []
    for line, (videopath, asked, score) in iter_headerless_rows(path, 3):
        where = f"{path}, line {line}"
        if videopath in asked_for and asked.strip() != asked_for[videopath].strip():
            raise EvaluatorOutputError(
                f"{where}: the question is not the {metric.upper()} question prepared for {videopath!r}; "
                "were the SA and PC files swapped?"
            )
        rows.append((line, videopath, parse_float(score, where, 0.0, 1.0)))
    return join_scores(videos, rows, path)


def metrics(videos: Sequence[IndexedVideo], sa: Mapping[str, float], pc: Mapping[str, float]) -> dict:
    """SA and PC in percent of videos scoring >= 0.5, overall and per category (absent categories omitted)."""
    groups = {"overall": list(videos)} | {c: [v for v in videos if v.category == c] for c in CATEGORIES}
    subsets = {
        name: {
            "n": len(group),
            "sa": percent(sum(sa[v.videopath] >= THRESHOLD for v in group), len(group)),
            "pc": percent(sum(pc[v.videopath] >= THRESHOLD for v in group), len(group)),
        }
        for name, group in groups.items()
        if group
    }
    unknown = sorted({v.category for v in videos} - set(CATEGORIES))
    if unknown:
        logger.warning("videos of categories %s count in `overall` only (expected %s)", unknown, CATEGORIES)
    return {"benchmark": "videophy", "subsets": subsets}


def score(videos: list[IndexedVideo], eval_dir: Path) -> dict:
    """Parse both outputs of `run` and compute the metrics."""
    sa, pc = (read_output(eval_dir / FILES[m][1], videos, m) for m in ("sa", "pc"))
    return metrics(videos, sa, pc)


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch_size", type=int, default=16, help="Evaluator batch size (default 16, its own).")


def _add_prepare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sa_caption",
        choices=SA_CAPTIONS,
        default=SA_CAPTIONS[0],
        help="How the SA question quotes the caption: its first sentence without the period (default, "
        "the paper's Table 1 as VideoREPA evaluates it) or the whole caption.",
    )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__, "VideoCon-Physics", _add_run_args, _add_prepare_args)
    dispatch(parser, argv, prepare, run, score, render_videophy)


if __name__ == "__main__":
    exit_on_user_error(main)
