"""The work of the precompute command, `python -m diffusers_tsa.features` (whose flags it takes), imported once the
flags parse; and the precomputed dataset on disk and on the Hub."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Callable, Sequence

import datasets
import torch

from .. import cli
from ..adapters import ADAPTERS
from ..data import ClipSpec, check_some_clip_reads
from ..data.columns import true_rows
from ..errors import DatasetError
from ..storage import check_free_space, check_output_folder, disk_full_is_one_line
from ..teachers import TeacherGeometry, load_teacher, teacher_config, teacher_geometry
from ..training.output_lock import LOCK_FILE, OutputDirLock
from ..training.plan import StudentPlan, clip_spec, load_dataset, plan_student, teacher_input
from . import ModelInputs, Precompute, TeacherFeatures


logger = logging.getLogger("diffusers_tsa.features")


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


def write_dataset(
    mapped: datasets.Dataset,
    output_dir: Path,
    state,
    what: str,
    verify: Callable[[datasets.Dataset], None] | None = None,
) -> None:
    """Writes the mapped table (this process's shard of it) as one precomputed dataset at `output_dir`
    (`write_precomputed`), atomically.

    Every process saves its shard beside the target (`NAME.shards/`); the main process merges them into
    `NAME.partial/`, checks it (`verify`), then swaps it with `output_dir` (an existing dataset there is replaced
    only now). A failure removes what it wrote and leaves `output_dir` as it was; a full disk is one `DiskFullError`
    saying so.

    Args:
        mapped (`datasets.Dataset`): this process's rows with the precomputed columns.
        output_dir (`Path`): the dataset folder (locked by the caller).
        state (`accelerate.PartialState`): the processes.
        what (`str`): what the dataset holds, for its card.
        verify (`Callable[[datasets.Dataset], None]`, *optional*): called by the main process on the complete
            dataset before it takes the place of the old one; what it raises leaves the old one in place.
    """
    partial, shards = (output_dir.with_name(output_dir.name + suffix) for suffix in (".partial", ".shards"))
    existing = output_dir.is_dir() and any(
        (output_dir / name).is_file() for name in ("dataset_dict.json", "state.json")
    )
    intact = (
        f"the dataset already in {output_dir} is unchanged" if existing else f"nothing was written to {output_dir}"
    )
    try:
        with disk_full_is_one_line(f"the precomputed dataset beside {output_dir}", output_dir.parent, intact):
            if state.num_processes == 1:
                write_precomputed(mapped, partial, what)
            else:
                mapped.save_to_disk(shards / f"{state.process_index:05d}")
                state.wait_for_everyone()
                if state.is_main_process:
                    parts = [datasets.load_from_disk(shards / f"{rank:05d}") for rank in range(state.num_processes)]
                    write_precomputed(datasets.concatenate_datasets(parts), partial, what)
        if state.is_main_process and verify is not None:
            verify(datasets.load_from_disk(partial)["train"])
    except BaseException:
        if state.is_main_process:
            remove_partials([partial, shards])
        raise
    if state.is_main_process:
        replaced = output_dir.with_name(output_dir.name + ".replaced")
        if output_dir.exists():
            output_dir.rename(replaced)
        partial.rename(output_dir)
        remove_partials([replaced, shards])


def remove_partials(paths: Sequence[Path]) -> None:
    """Removes what a killed or failed write left (`write_dataset`'s temporary folders)."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    """Precomputes what the parsed flags `args` ask for."""
    from accelerate import PartialState

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
        student = geometry = config = None
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
        output_dir = Path(args.output_dir)
        check_output_folder(output_dir, "output_dir")
    state = PartialState(cpu=not torch.cuda.is_available())  # CPU runs use gloo across processes
    if state.is_main_process:
        # One precompute (or training run) per folder; what a killed run left beside it goes first.
        created = not output_dir.exists()
        with cli.flag_errors():
            lock = OutputDirLock(output_dir, purpose="precompute").acquire()
        remove_partials([output_dir.with_name(output_dir.name + s) for s in (".partial", ".shards", ".replaced")])
    try:
        precompute(args, state, clip, student, geometry, config, teacher_options, output_dir)
    except BaseException:
        if state.is_main_process and created and [p.name for p in output_dir.iterdir()] == [LOCK_FILE]:
            shutil.rmtree(output_dir)  # the folder this run made for its lock alone
        raise
    finally:
        if state.is_main_process:
            lock.release()


def precompute(
    args: argparse.Namespace,
    state,
    clip: ClipSpec,
    student: StudentPlan | None,
    geometry: TeacherGeometry | None,
    config,
    teacher_options: dict,
    output_dir: Path,
) -> None:
    """Loads the frozen models, maps the table and writes it (`write_dataset`), as `main` planned and checked."""
    with state.main_process_first(), cli.flag_errors():  # one process prepares the table's cache, the others reuse it
        table = load_dataset(args, split=args.split, cache_dir=args.cache_dir)
        # Before any model loads: a clip that can be read, and room for what the configs say the clips store.
        check_some_clip_reads(table, clip)
        at_least = 0 if student is None else ModelInputs.min_bytes_per_clip(student.spec, clip, args.storage_dtype)
        if geometry is not None:
            at_least += TeacherFeatures.stored_bytes(geometry.grid, geometry.hidden_size, args.storage_dtype)
        check_free_space(output_dir.parent, at_least * len(table), "output_dir", f"{len(table)} clips")
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
    bytes_per_clip = sum(t.bytes_per_clip for t in transforms)
    with cli.flag_errors():  # before the compute, exactly, now that the encoders give the stored shapes
        check_free_space(output_dir.parent, bytes_per_clip * len(table), "output_dir", f"{len(table)} clips")
    shard = (
        table.shard(state.num_processes, state.process_index, contiguous=True) if state.num_processes > 1 else table
    )
    what = " and ".join(t.description for t in transforms)

    def usable(saved: datasets.Dataset) -> int:
        return len(true_rows(saved, *transform.valid_columns))

    def some_usable(saved: datasets.Dataset) -> None:
        if usable(saved) == 0:
            raise DatasetError(
                f"None of the {len(saved)} clips gave usable {what} (see the warnings above): check `video_column` "
                "and the clip paths, and that the clips have `ClipSpec.max_num_frames` frames."
            )

    write_dataset(transform.map(shard, batch_size=args.batch_size), output_dir, state, what, verify=some_usable)
    state.wait_for_everyone()
    saved = datasets.load_from_disk(output_dir)["train"]
    if student is not None and adapter.truncated_captions:
        logger.warning(cli.translate(adapter.truncated_captions.summary()))
    if state.is_main_process:
        logger.info(
            "Wrote %d clips (%d unusable) to %s: %s, %d bytes per clip.",
            len(saved),
            len(saved) - usable(saved),
            output_dir,
            what,
            bytes_per_clip,
        )
        if args.push_to_hub:
            logger.info(
                "Pushed to the Hub dataset %s.", push_precomputed(output_dir, args.hub_dataset_id or output_dir.name)
            )
