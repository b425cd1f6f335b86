"""`python -m diffusers_tsa.features`: precompute teacher features and motion masks for a video dataset.

One GPU or many (`accelerate launch -m diffusers_tsa.features ...`): each process maps its own shard and the main
process merges them into one dataset, saved with `save_to_disk` for the training script's `--dataset_name`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import datasets
import torch

from .. import cli
from ..teachers import load_teacher, teacher_config, teacher_geometry
from ..errors import DatasetError
from . import STORAGE_DTYPES, VALID_COLUMN, TeacherFeatures

logger = logging.getLogger("diffusers_tsa.features")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m diffusers_tsa.features",
        description="Precompute teacher features and motion masks for a video dataset.",
    )
    cli.add_dataset_arguments(parser)
    parser.add_argument("--split", default="train", help="Split to read (train).")
    parser.add_argument("--cache_dir", default=None, help="datasets / Hub cache folder.")
    cli.add_clip_arguments(parser)
    cli.add_teacher_arguments(parser, required=True)
    cli.add_mask_ratio_argument(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--storage_dtype", default="float16", choices=sorted(STORAGE_DTYPES),
                       help="Dtype of the stored features (float16).")
    group.add_argument("--batch_size", type=int, default=16, help="Clips decoded per map call (16).")
    group.add_argument("--teacher_batch_size", type=int, default=4, help="Clips per teacher forward (4).")
    group.add_argument("--decode_workers", type=int, default=4, help="Decoding threads (4).")
    group.add_argument("--output_dir", required=True, help="Folder for the dataset (`datasets.load_from_disk`).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every setting is checked against the teacher's config before any weight is loaded.
    with cli.flag_errors():
        clip = cli.clip_spec(args)
        TeacherFeatures.check_settings(clip, storage_dtype=args.storage_dtype, mask_ratio=args.tsa_mask_ratio)
        options = {"trust_remote_code": args.trust_remote_code, "revision": args.teacher_revision,
                   "cache_dir": args.cache_dir}
        config = teacher_config(args.teacher_model_name_or_path, **options)
        geometry = teacher_geometry(args.teacher_model_name_or_path, cli.teacher_input(args, clip, config), config)
    state = PartialState(cpu=not torch.cuda.is_available())  # CPU runs use gloo across processes
    with state.main_process_first(), cli.flag_errors():  # one process prepares the table's cache, the others reuse it
        table = cli.load_dataset(args, split=args.split, cache_dir=args.cache_dir)
    teacher = load_teacher(
        geometry.name, geometry.input, config=config, dtype=getattr(torch, args.teacher_dtype), device=state.device,
        **options,
    )
    transform = TeacherFeatures(
        teacher, clip, storage_dtype=args.storage_dtype, mask_ratio=args.tsa_mask_ratio,
        teacher_batch_size=args.teacher_batch_size, decode_workers=args.decode_workers,
    )
    output_dir = Path(args.output_dir)
    if state.num_processes == 1:
        transform.map(table, batch_size=args.batch_size).save_to_disk(output_dir)
    else:
        shard_dir = output_dir.with_name(output_dir.name + ".shards")
        shard = table.shard(state.num_processes, state.process_index, contiguous=True)
        transform.map(shard, batch_size=args.batch_size).save_to_disk(shard_dir / f"{state.process_index:05d}")
        state.wait_for_everyone()
        if state.is_main_process:
            parts = [datasets.load_from_disk(shard_dir / f"{rank:05d}") for rank in range(state.num_processes)]
            datasets.concatenate_datasets(parts).save_to_disk(output_dir)
            shutil.rmtree(shard_dir)
    state.wait_for_everyone()
    saved = datasets.load_from_disk(output_dir)
    usable = sum(saved[VALID_COLUMN])
    if usable == 0:
        raise DatasetError(
            f"None of the {len(saved)} clips gave usable teacher features (see the warnings above): check "
            "`video_column` and the clip paths, and that the clips have `ClipSpec.max_num_frames` frames."
        )
    if state.is_main_process:
        logger.info(
            "Wrote %d clips (%d unusable) to %s; %d bytes of features and mask per clip.",
            len(saved), len(saved) - usable, output_dir, transform.bytes_per_clip,
        )


if __name__ == "__main__":
    cli.run(main)
