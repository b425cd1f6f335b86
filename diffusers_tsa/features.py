"""Precomputed teacher features and motion masks: a `datasets.map` transform and its CLI.

Training then reads `teacher_features` (F, H, W, C) and `motion_mask` (F, H, W) from the dataset and never runs the
teacher. Example (one GPU or many, each process maps its own shard):

    accelerate launch -m diffusers_tsa.features --dataset_name clips.csv --video_column video \\
        --teacher videomaev2-base-distilled --output_dir clips-vmae2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import datasets
import numpy as np
import torch

from .data import ClipSpec, load_video_dataset, read_video
from .errors import VideoDecodeError
from .masking import motion_saliency_mask
from .teachers import TeacherInput, VideoTeacher, load_teacher

logger = logging.getLogger(__name__)

FEATURES_COLUMN = "teacher_features"
MASK_COLUMN = "motion_mask"
VALID_COLUMN = "teacher_valid"
#: Storage dtype -> Arrow dtype of the column: Arrow has no bfloat16, so its bits are stored as uint16.
STORAGE_DTYPES = {"float16": "float16", "bfloat16": "uint16"}
_FORMAT_VERSION = 1


def decode_teacher_features(value, stored_dtype: str) -> torch.Tensor:
    """Turns a stored `teacher_features` value back into float32 features.

    Args:
        value (`numpy.ndarray`, `torch.Tensor` or nested lists): one row or a batch, as any `datasets` format gives it.
        stored_dtype (`str`): `dataset.features["teacher_features"].dtype`, `"float16"` or `"uint16"` (bfloat16 bits).

    Returns:
        `torch.Tensor`: float32 features of the same shape, e.g. `(F, H, W, C)`.
    """
    if stored_dtype == "uint16":  # bfloat16 bits are the upper half of the float32 with the same value
        bits = torch.as_tensor(np.asarray(value, dtype=np.int64))
        return (bits.to(torch.int32) << 16).view(torch.float32)
    return torch.as_tensor(np.asarray(value)).float()


class TeacherFeatures:
    """A `dataset.map(tf, batched=True)` transform adding teacher features and motion masks to a video table.

    Each clip is decoded once (`read_video`); the same teacher frames give the features (`VideoTeacher.encode`) and
    the motion mask (`motion_saliency_mask` at the teacher's tubelet). Clips that cannot be used get
    `teacher_valid = False` and empty columns, are logged and counted in `num_invalid`; nothing is raised.

    Added columns: `teacher_features` `(F, H, W, C)` (float16, or bfloat16 bits as uint16), `motion_mask`
    `(F, H, W)` bool, `teacher_valid` bool.

    Args:
        teacher (`VideoTeacher`): the teacher, already on its device and in its dtype.
        clip (`ClipSpec`): how the training clips are read; its crop must be deterministic (not `"random"`), since
            training must crop the clip where the features were computed.
        video_column (`str`, defaults to `"video"`): column of paths or `datasets.Video(decode=False)` values.
        storage_dtype (`str`, defaults to `"float16"`): `"float16"` or `"bfloat16"`.
        mask_ratio (`float`, defaults to 0.2): share `k` of tokens kept per frame by the motion mask.
        teacher_batch_size (`int`, defaults to 4): clips per teacher forward.
        decode_workers (`int`, defaults to 4): threads decoding the clips of a `map` batch in parallel.
    """

    def __init__(
        self,
        teacher: VideoTeacher,
        clip: ClipSpec,
        *,
        video_column: str = "video",
        storage_dtype: str = "float16",
        mask_ratio: float = 0.2,
        teacher_batch_size: int = 4,
        decode_workers: int = 4,
    ):
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"`storage_dtype` must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}.")
        if clip.reshape_mode == "random":
            raise ValueError(
                "Precomputed features need a deterministic crop: use `--video_reshape_mode center` (or none), and the "
                "same mode when training."
            )
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"`mask_ratio` must be in (0, 1], got {mask_ratio}.")
        self.teacher = teacher
        self.clip = clip
        self.video_column = video_column
        self.storage_dtype = storage_dtype
        self.mask_ratio = mask_ratio
        self.teacher_batch_size = teacher_batch_size
        self.decode_workers = decode_workers
        self.num_invalid = 0
        grid = teacher.grid
        self.features = datasets.Features(
            {
                FEATURES_COLUMN: datasets.Array4D((*grid, teacher.hidden_size), STORAGE_DTYPES[storage_dtype]),
                MASK_COLUMN: datasets.Array3D(grid, "bool"),
                VALID_COLUMN: datasets.Value("bool"),
            }
        )
        self.fingerprint = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()

    def settings(self) -> dict:
        """Everything the added columns depend on (the teacher by its fingerprint), as JSON-ready values."""
        return {
            "format": _FORMAT_VERSION,
            "teacher": self.teacher.name,
            "teacher_fingerprint": self.teacher.fingerprint(),
            "teacher_input": asdict(self.teacher.input),
            "grid": list(self.teacher.grid),
            "hidden_size": self.teacher.hidden_size,
            "tubelet": list(self.teacher.tubelet),
            "clip": asdict(self.clip),
            "video_column": self.video_column,
            "storage_dtype": self.storage_dtype,
            "mask_ratio": self.mask_ratio,
        }

    @property
    def bytes_per_clip(self) -> int:
        """Payload stored per usable clip: 2 bytes per feature value and 1 per mask token (Arrow adds a little)."""
        return int(np.prod(self.teacher.grid)) * (2 * self.teacher.hidden_size + 1)

    def _decode(self, source) -> torch.Tensor | None:
        try:
            return read_video(source, self.clip)
        except VideoDecodeError as err:
            logger.warning("Skipping a clip: %s", err)
            return None

    def _store(self, features: torch.Tensor) -> np.ndarray:
        if self.storage_dtype == "bfloat16":
            return features.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
        return features.to(torch.float16).cpu().numpy()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        """Adds the three columns to a `map` batch (see the class docstring)."""
        sources = batch[self.video_column]
        with ThreadPoolExecutor(max_workers=max(1, min(self.decode_workers, len(sources)))) as pool:
            clips = list(pool.map(self._decode, sources))
        features, masks = [None] * len(clips), [None] * len(clips)
        valid = [i for i, clip in enumerate(clips) if clip is not None]
        self.num_invalid += len(clips) - len(valid)
        device = self.teacher.mean.device
        for start in range(0, len(valid), self.teacher_batch_size):
            rows = valid[start : start + self.teacher_batch_size]
            frames = self.teacher.prepare(torch.stack([clips[i] for i in rows]).to(device))
            encoded = self._store(self.teacher.encode_prepared(frames))
            mask = motion_saliency_mask(frames, tubelet=self.teacher.tubelet, ratio=self.mask_ratio).cpu().numpy()
            for j, row in enumerate(rows):
                features[row], masks[row] = encoded[j], mask[j]
        return {FEATURES_COLUMN: features, MASK_COLUMN: masks, VALID_COLUMN: [c is not None for c in clips]}

    def fingerprint_for(self, dataset: datasets.Dataset) -> str:
        """`new_fingerprint` for mapping `dataset`: this transform's fingerprint joined with the dataset's, so two
        tables (or two shards) never share a cache file and a changed setting never reuses one."""
        return hashlib.sha256(f"{dataset._fingerprint}:{self.fingerprint}".encode()).hexdigest()[:32]

    def map(self, dataset: datasets.Dataset, *, batch_size: int = 16, **map_kwargs) -> datasets.Dataset:
        """`dataset.map(self, batched=True)` with the right column types and cache fingerprint.

        Args:
            dataset (`datasets.Dataset`): a table with `video_column`.
            batch_size (`int`, defaults to 16): rows per call (decoded in parallel, then run in teacher batches).
            **map_kwargs: more `datasets.Dataset.map` arguments (`desc`, `load_from_cache_file`, ...).

        Returns:
            `datasets.Dataset`: `dataset` with the three added columns; reuses the cache when nothing changed.
        """
        if self.video_column not in dataset.column_names:
            raise ValueError(f"`--video_column` is {self.video_column!r}; the dataset has {dataset.column_names}.")
        features = datasets.Features({**dataset.features, **self.features})
        map_kwargs.setdefault("desc", "Teacher features")
        mapped = dataset.map(
            self,
            batched=True,
            batch_size=batch_size,
            features=features,
            new_fingerprint=self.fingerprint_for(dataset),
            **map_kwargs,
        )
        invalid = len(mapped) - sum(mapped[VALID_COLUMN])
        if invalid:
            logger.warning("%d of %d clips could not be used and are marked `%s = False`.", invalid, len(mapped), VALID_COLUMN)
        return mapped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Precompute teacher features and motion masks for a video dataset.")
    # Dataset
    parser.add_argument("--dataset_name", default=None, help="Hub dataset, saved dataset folder, or CSV/JSON(L) file.")
    parser.add_argument("--dataset_config_name", default=None, help="Configuration of a Hub dataset.")
    parser.add_argument("--instance_data_root", default=None, help="Folder of the clips (and of prompts/videos files).")
    parser.add_argument("--caption_column", default="text", help="Caption column (or file); default 'text'.")
    parser.add_argument("--video_column", default="video", help="Video column (or file); default 'video'.")
    parser.add_argument("--split", default="train", help="Split to read; default 'train'.")
    parser.add_argument("--cache_dir", default=None, help="datasets / Hub cache folder.")
    # Clip reading, as in training (must match the training flags)
    parser.add_argument("--height", type=int, default=480, help="Training height; default 480.")
    parser.add_argument("--width", type=int, default=720, help="Training width; default 720.")
    parser.add_argument("--max_num_frames", type=int, default=49, help="Training frames (4k+1); default 49.")
    parser.add_argument("--skip_frames_start", type=int, default=0, help="Frames skipped at the start; default 0.")
    parser.add_argument("--skip_frames_end", type=int, default=0, help="Frames skipped at the end; default 0.")
    parser.add_argument("--video_reshape_mode", default="center", choices=["center", "none"], help="Crop; default center.")
    # Teacher
    parser.add_argument("--teacher", required=True, help="Teacher checkpoint (see `diffusers_tsa.teachers.load_teacher`).")
    parser.add_argument("--teacher_num_frames", type=int, default=None, help="Default: the clip's frames minus the first.")
    parser.add_argument("--teacher_height", type=int, default=None, help="Default: a third of --height.")
    parser.add_argument("--teacher_width", type=int, default=None, help="Default: a third of --width.")
    parser.add_argument("--teacher_dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="Dtype the teacher runs in; default float32 (bfloat16 is ~2x faster on GPUs).")
    parser.add_argument("--trust_remote_code", action="store_true", help="Allow the teacher's own code to run.")
    parser.add_argument("--revision", default=None, help="Hub revision of the teacher.")
    # Output
    parser.add_argument("--storage_dtype", default="float16", choices=sorted(STORAGE_DTYPES),
                        help="Dtype of the stored features; default float16.")
    parser.add_argument("--mask_ratio", type=float, default=0.2, help="Motion-mask share k per frame; default 0.2.")
    parser.add_argument("--batch_size", type=int, default=16, help="Clips decoded per map call; default 16.")
    parser.add_argument("--teacher_batch_size", type=int, default=4, help="Clips per teacher forward; default 4.")
    parser.add_argument("--decode_workers", type=int, default=4, help="Decoding threads; default 4.")
    parser.add_argument("--output_dir", required=True, help="Folder for the dataset (`datasets.load_from_disk`).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = PartialState(cpu=not torch.cuda.is_available())  # CPU runs use gloo across processes
    clip = ClipSpec.from_flags(args)
    teacher = load_teacher(
        args.teacher,
        TeacherInput.from_flags(args, clip),
        dtype=getattr(torch, args.teacher_dtype),
        device=state.device,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
        cache_dir=args.cache_dir,
    )
    with state.main_process_first():  # one process prepares the table's cache, the others reuse it
        table = load_video_dataset(
            args.dataset_name,
            instance_data_root=args.instance_data_root,
            caption_column=args.caption_column,
            video_column=args.video_column,
            dataset_config_name=args.dataset_config_name,
            split=args.split,
            cache_dir=args.cache_dir,
        )
    transform = TeacherFeatures(
        teacher,
        clip,
        storage_dtype=args.storage_dtype,
        mask_ratio=args.mask_ratio,
        teacher_batch_size=args.teacher_batch_size,
        decode_workers=args.decode_workers,
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
    if state.is_main_process:
        settings = {**transform.settings(), "fingerprint": transform.fingerprint}
        (output_dir / "teacher_features.json").write_text(json.dumps(settings, indent=2))
        saved = datasets.load_from_disk(output_dir)
        logger.info(
            "Wrote %d clips (%d unusable) to %s; %d bytes of features and mask per clip.",
            len(saved), len(saved) - sum(saved[VALID_COLUMN]), output_dir, transform.bytes_per_clip,
        )
    state.wait_for_everyone()


if __name__ == "__main__":
    main()
