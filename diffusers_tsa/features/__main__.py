"""`python -m diffusers_tsa.features`: compute once what the frozen models give for each clip of a video dataset: the
student's latents (the VAE posterior) and prompt embeddings (`ModelInputs`, with `--pretrained_model_name_or_path`),
and the teacher's features and motion masks (`TeacherFeatures`, with `--teacher_model_name_or_path`), on one decode of
each clip.

One GPU or many (`accelerate launch -m diffusers_tsa.features ...`): each process maps its own shard and the main
process merges them into one dataset, written as `write_precomputed` says (it loads with `datasets.load_dataset(folder)`
and `datasets.load_from_disk(folder)["train"]`, and `--push_to_hub` makes it a Hub dataset repository) for the training
script's `--dataset_name`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import datasets
import torch

from .. import cli
from ..adapters import ADAPTERS
from ..errors import DatasetError
from ..teachers import load_teacher, teacher_config, teacher_geometry
from ..training.plan import clip_spec, load_dataset, plan_student, teacher_input
from . import STORAGE_DTYPES, ModelInputs, Precompute, TeacherFeatures


logger = logging.getLogger("diffusers_tsa.features")

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


# --- The precomputed dataset on disk and on the Hub (one column layout, documented in the README) ------------------

#: The dataset card's YAML: `load_dataset(folder)` and `load_dataset(repo_id)` read the split's Arrow files.
_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: train/data-*.arrow
tags:
- diffusers-tsa
---

# Precomputed with `python -m diffusers_tsa.features`

{what} for {num_clips} clips. Load it with `datasets.load_dataset("{name}", split="train")` (or, from the folder,
`datasets.load_from_disk(folder)["train"]`), or train on it with
`train_text_to_video_tsa.py --dataset_name {name}`: every row records the settings it was made with
(`teacher_settings`, `inputs_settings`), which training checks against its own.
"""


def write_precomputed(table: datasets.Dataset, output_dir: Path, what: str) -> None:
    """Writes the precomputed `table` (`what` it holds, for its card) to `output_dir`: a `DatasetDict` with one
    `train` split (`save_to_disk`) and a dataset card (`README.md`) whose YAML points `load_dataset` at the split's
    Arrow files, so that the folder loads with `load_dataset(folder)` and `load_from_disk(folder)["train"]`, and
    uploaded as it is it is a Hub dataset repository."""
    datasets.DatasetDict({"train": table}).save_to_disk(output_dir)
    card = _CARD.format(what=what[0].upper() + what[1:], num_clips=len(table), name=output_dir.name)
    (output_dir / "README.md").write_text(card, encoding="utf-8")


def push_precomputed(output_dir: Path, repo_id: str) -> str:
    """Uploads the folder `write_precomputed` wrote (its settings in every row, and every file beside them) to the Hub
    dataset repository `repo_id`, created if needed; returns the repository id."""
    from huggingface_hub import HfApi

    api = HfApi()
    repo_id = api.create_repo(repo_id, repo_type="dataset", exist_ok=True).repo_id
    api.upload_folder(folder_path=output_dir, repo_id=repo_id, repo_type="dataset")
    return repo_id


def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every setting is checked against the model's and the teacher's configs before any weight is loaded.
    with cli.flag_errors():
        if args.pretrained_model_name_or_path is None and args.teacher_model_name_or_path is None:
            raise cli.FlagError(
                "Nothing to precompute: give --pretrained_model_name_or_path (latents and prompt embeddings), "
                "--teacher_model_name_or_path (teacher features), or both."
            )
        clip = clip_spec(args)
        TeacherFeatures.check_settings(clip, storage_dtype=args.storage_dtype, mask_ratio=args.tsa_mask_ratio)
        student = geometry = None
        if args.pretrained_model_name_or_path is not None:
            student = plan_student(args, clip.num_frames, clip.height, clip.width)
        teacher_options = {
            "trust_remote_code": args.trust_remote_code,
            "revision": args.teacher_revision,
            "cache_dir": args.cache_dir,
        }
        if args.teacher_model_name_or_path is not None:
            config = teacher_config(args.teacher_model_name_or_path, **teacher_options)
            spec = student.spec if student is not None else None  # `--teacher_frames latent/pooled` need it
            geometry = teacher_geometry(
                args.teacher_model_name_or_path, teacher_input(args, clip, config, spec), config
            )
    state = PartialState(cpu=not torch.cuda.is_available())  # CPU runs use gloo across processes
    with state.main_process_first(), cli.flag_errors():  # one process prepares the table's cache, the others reuse it
        table = load_dataset(args, split=args.split, cache_dir=args.cache_dir)
    transforms = []
    if student is not None:
        adapter = ADAPTERS[student.spec.family].from_pretrained(
            student.spec,
            variant=args.variant,
            weight_dtype=getattr(torch, args.encoder_dtype),
            device=state.device,
            options=student.options,
            transformer=False,
        )
        adapter.configure_vae(slicing=args.enable_slicing, tiling=args.enable_tiling)
        transforms.append(
            ModelInputs(
                adapter,
                clip,
                id_token=args.id_token,
                variant=args.variant,
                storage_dtype=args.storage_dtype,
                vae_batch_size=args.vae_batch_size,
                decode_workers=args.decode_workers,
            )
        )
    if geometry is not None:
        teacher = load_teacher(
            geometry.name,
            geometry.input,
            config=config,
            dtype=getattr(torch, args.teacher_dtype),
            device=state.device,
            **teacher_options,
        )
        transforms.append(
            TeacherFeatures(
                teacher,
                clip,
                storage_dtype=args.storage_dtype,
                mask_ratio=args.tsa_mask_ratio,
                teacher_batch_size=args.teacher_batch_size,
                decode_workers=args.decode_workers,
            )
        )
    transform = transforms[0] if len(transforms) == 1 else Precompute(transforms)
    what = " and ".join(t.description for t in transforms)
    output_dir = Path(args.output_dir)
    if state.num_processes == 1:
        write_precomputed(transform.map(table, batch_size=args.batch_size), output_dir, what)
    else:
        shard_dir = output_dir.with_name(output_dir.name + ".shards")
        shard = table.shard(state.num_processes, state.process_index, contiguous=True)
        transform.map(shard, batch_size=args.batch_size).save_to_disk(shard_dir / f"{state.process_index:05d}")
        state.wait_for_everyone()
        if state.is_main_process:
            parts = [datasets.load_from_disk(shard_dir / f"{rank:05d}") for rank in range(state.num_processes)]
            write_precomputed(datasets.concatenate_datasets(parts), output_dir, what)
            shutil.rmtree(shard_dir)
    state.wait_for_everyone()
    saved = datasets.load_from_disk(output_dir)["train"]
    usable = sum(all(row) for row in zip(*(saved[column] for column in transform.valid_columns)))
    if usable == 0:
        raise DatasetError(
            f"None of the {len(saved)} clips gave usable {what} (see the warnings above): check `video_column` and "
            "the clip paths, and that the clips have `ClipSpec.max_num_frames` frames."
        )
    if state.is_main_process:
        logger.info(
            "Wrote %d clips (%d unusable) to %s: %s, %d bytes per clip.",
            len(saved),
            len(saved) - usable,
            output_dir,
            what,
            sum(t.bytes_per_clip for t in transforms),
        )
        if args.push_to_hub:
            logger.info(
                "Pushed to the Hub dataset %s.", push_precomputed(output_dir, args.hub_dataset_id or output_dir.name)
            )


if __name__ == "__main__":
    cli.run(main)
