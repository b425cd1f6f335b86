"""`python -m diffusers_tsa.features`: compute once what the frozen models give for each clip of a video dataset: the
student's latents (the VAE posterior) and prompt embeddings (`ModelInputs`, with `--pretrained_model_name_or_path`),
and the teacher's features and motion masks (`TeacherFeatures`, with `--teacher_model_name_or_path`), on one decode of
each clip.

One GPU or many (`accelerate launch -m diffusers_tsa.features ...`): each process maps its own shard and the main
process merges them into one dataset, written as `command.write_precomputed` says (it loads with
`datasets.load_dataset(folder)` and `datasets.load_from_disk(folder)["train"]`, and `--push_to_hub` makes it a Hub
dataset repository) for the training script's `--dataset_name`.

The output folder is checked (a folder, writable, with room for what the configs say each clip stores: the
teacher's features exactly, the latents at least) before any model loads, and for free space again, exactly, once
the encoders give the stored shapes; it is locked for the run (as training's), and written under a temporary name
beside it, renamed into place only when complete: a failed or killed rerun leaves an existing dataset as it was.
"""

from __future__ import annotations

import argparse

from .. import cli
from ..choices import STORAGE_DTYPES


DTYPES = ["float32", "bfloat16", "float16"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m diffusers_tsa.features",
        description="Precompute latents, prompt embeddings, and teacher features and motion masks for a video "
        "dataset (give --pretrained_model_name_or_path, --teacher_model_name_or_path, or both).",
    )
    cli.add_dataset_arguments(parser)
    parser.add_argument("--split", default="train", help="Split to read (train).")
    parser.add_argument("--cache_dir", default=None, help="datasets / Hub cache folder.")
    cli.add_clip_arguments(parser)
    cli.add_student_arguments(
        parser, optional="Its VAE and text encoder give latents and prompt embeddings (default: none are computed)."
    )
    group = parser.add_argument_group("latents and prompt embeddings (the same settings as for training)")
    group.add_argument("--id_token", type=str, default=None, help="Token prepended to every caption, as training's.")
    group.add_argument(
        "--encoder_dtype",
        type=str,
        default="float32",
        choices=DTYPES,
        help="Dtype the VAE and the text encoder run in (float32; bfloat16 is what a bf16 run uses online).",
    )
    group.add_argument("--vae_batch_size", type=int, default=1, help="Clips per VAE forward (1).")
    cli.add_teacher_arguments(parser)
    cli.add_loss_option_arguments(parser, targets_only=True)
    group = parser.add_argument_group("output")
    group.add_argument(
        "--storage_dtype",
        default="float16",
        choices=sorted(STORAGE_DTYPES),
        help="Dtype of the stored tensors (float16).",
    )
    group.add_argument("--batch_size", type=int, default=16, help="Clips decoded per map call (16).")
    group.add_argument("--teacher_batch_size", type=int, default=4, help="Clips per teacher forward (4).")
    group.add_argument("--decode_workers", type=int, default=4, help="Decoding threads (4).")
    group.add_argument(
        "--output_dir",
        required=True,
        help="Folder for the dataset (`datasets.load_dataset(folder)`, or `datasets.load_from_disk(folder)['train']`).",
    )
    group.add_argument(
        "--push_to_hub", action="store_true", help="Also upload the folder as a Hub dataset repository (off)."
    )
    group.add_argument(
        "--hub_dataset_id", default=None, help="The Hub dataset repository to push to (default: --output_dir's name)."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Precomputes what the flags `argv` (default: the command line's) ask for. The work
    (`diffusers_tsa.features.command`), and with it torch, diffusers and transformers, is imported after the flags
    parse: `--help` and flag errors come first."""
    args = parse_args(argv)
    from .command import run

    run(args)


if __name__ == "__main__":
    cli.run(main)
