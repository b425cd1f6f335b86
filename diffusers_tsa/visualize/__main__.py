"""`python -m diffusers_tsa.visualize`: see what the alignment does on one clip.

    # M-TSA query tokens at k = 10, 20 and 40 % (paper Fig. 4); reads the teacher's config, no weights
    python -m diffusers_tsa.visualize mask --video clip.mp4 --teacher_model_name_or_path videomaev2-base \\
        --tsa_mask_ratio 0.1 0.2 0.4

    # correspondence maps of the 3 most dynamic tokens of token frame 0, teacher beside a trained student
    python -m diffusers_tsa.visualize correspondence --video clip.mp4 --teacher_model_name_or_path videomaev2-base \\
        --pretrained_model_name_or_path THUDM/CogVideoX-2b --run_dir tsa-run --temperatures 1.0 0.1 0.01

Clip and teacher flags are the training script's; give the values the run was trained with. Every written file is
printed at the end.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import cli


#: The training script's flags, and this command's own.
FLAGS = {
    **cli.FLAGS,
    "query": "--query",
    "query_frame": "--query_frame",
    "top_k": "--top_k",
    "tau": "--temperatures",
    "ratio": "--tsa_mask_ratio",
    "num_columns": "--num_columns",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m diffusers_tsa.visualize",
        description="Pictures of M-TSA motion masks and of teacher/student correspondence maps on one clip.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    mask = commands.add_parser(
        "mask",
        help="The M-TSA query tokens of each frame (paper Fig. 4); reads no weights.",
        description="Overlays the M-TSA query tokens (the most dynamic teacher tokens of each frame) on the clip.",
    )
    _add_common_arguments(mask)
    mask.add_argument(
        "--tsa_mask_ratio",
        "--mask_ratio",
        type=float,
        nargs="+",
        default=[0.2],
        help="Share(s) k of the most dynamic tokens per frame, one row each (0.2, the training default).",
    )
    correspondence = commands.add_parser(
        "correspondence",
        help="Correspondence maps of query tokens, teacher beside student (paper Fig. 1, 3).",
        description="Maps P_{i,f} = softmax(R_{i,f} / tau) of query tokens i over every later frame f.",
    )
    _add_common_arguments(correspondence)
    _add_correspondence_arguments(correspondence)
    return parser.parse_args(argv)


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="The clip: a video file.")
    cli.add_clip_arguments(parser)
    cli.add_teacher_arguments(parser, required=True)
    parser.add_argument("--cache_dir", default=None, help="Hub cache folder.")
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output_dir", default="tsa_visualizations", help="Folder of the pictures (tsa_visualizations)."
    )
    group.add_argument(
        "--num_columns", type=int, default=8, help="Token frames per picture at most, evenly spaced (8)."
    )
    group.add_argument(
        "--fps",
        type=float,
        default=8,
        help="Frame rate of the teacher's frames in the videos (8); correspondence videos show one token frame per "
        "tubelet, at fps / tubelet frames.",
    )


def _add_correspondence_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("queries")
    group.add_argument(
        "--query",
        action="append",
        default=None,
        metavar="X,Y",
        help="A query point, in pixels of the clip as read at --height x --width, in --query_frame; repeat for more.",
    )
    group.add_argument("--query_frame", type=int, default=0, help="Teacher token frame of the queries (0).")
    group.add_argument(
        "--top_k", type=int, default=3, help="Without --query: the k most dynamic tokens of --query_frame (3)."
    )
    group.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=[1.0, 0.1],
        help="Softmax temperature(s) tau, a row each (1.0 0.1: the raw and the tempered correspondences).",
    )
    cli.add_loss_option_arguments(group, targets_only=True)
    cli.add_student_arguments(parser, optional="Without it, the maps show the teacher alone.")
    group = parser.add_argument_group("the trained student")
    group.add_argument(
        "--run_dir",
        default=None,
        help="A training run's --output_dir (or a checkpoint-* folder in it): its LoRA or transformer/, and its "
        "projector (alignment_projector/). Without a projector, the student's raw block tokens are shown.",
    )
    group.add_argument(
        "--alignment_depth",
        type=int,
        default=None,
        help="The aligned block, counted from 1 (the family's default, as training uses it).",
    )
    group.add_argument(
        "--timestep",
        type=int,
        default=500,
        help="Noise level the student sees, in [0, 1000) (500); flow-matching families use sigma = timestep / 1000.",
    )
    group.add_argument("--prompt", default="", help="The student's text conditioning (empty).")
    group.add_argument("--seed", type=int, default=0, help="Seed of the VAE sample and the noise (0).")


def main(argv: list[str] | None = None) -> list[Path]:
    """Runs a subcommand; a user mistake ends it with one `error: ...` line. Prints and returns the written paths."""

    def run() -> list[Path]:
        args = parse_args(argv)
        from .command import run_correspondence, run_mask  # torch, diffusers, transformers: after the flags parse

        paths = run_mask(args) if args.command == "mask" else run_correspondence(args)
        for path in paths:
            print(f"wrote {os.fspath(path)}")
        return paths

    return cli.run(run, FLAGS)


if __name__ == "__main__":
    main()
