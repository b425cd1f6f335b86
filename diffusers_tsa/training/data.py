"""Training examples from a caption/video table: decoded clips, captions, precomputed teacher columns, and the one
seed that orders them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

import datasets
import numpy as np
import torch

from ..data import CAPTION, VIDEO, ClipSpec, read_video
from ..errors import DatasetError, VideoDecodeError
from ..features import MASK_COLUMN, VALID_COLUMN, decode_teacher_features

logger = logging.getLogger(__name__)


class DataOrder:
    """The seed and epoch behind everything random in the data: the shuffle (`ShuffledOrder`) and each example's
    crop, flip and stand-in for an unreadable clip (`TrainingClips`).

    Each draw comes from its own generator seeded by `(seed, epoch, *keys)`, never from the global RNG, so the data a
    step sees depends on the seed, the epoch and the position alone: a run resumed inside an epoch (the seed saved with
    each checkpoint, `save`/`load`) sees the same batches as the uninterrupted run, with any number of workers.

    Args:
        seed (`int`): the same on every process.
    """

    FILE_NAME = "data_order.json"

    def __init__(self, seed: int):
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, *keys: int) -> torch.Generator:
        """A generator seeded by `(seed, epoch, *keys)`."""
        entropy = np.random.SeedSequence([self.seed, self.epoch, *keys]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))

    def save(self, folder: str | Path) -> None:
        (Path(folder) / self.FILE_NAME).write_text(json.dumps({"seed": self.seed}))

    def load(self, folder: str | Path) -> None:
        self.seed = int(json.loads((Path(folder) / self.FILE_NAME).read_text())["seed"])


class ShuffledOrder(torch.utils.data.Sampler[int]):
    """A fresh permutation of `range(size)` each epoch, drawn from `order` (the same on every process, so that
    accelerate's per-process shards of it never overlap). Accelerate's data loader calls `set_epoch`."""

    def __init__(self, size: int, order: DataOrder):
        self.size, self.order = size, order

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size, generator=self.order.generator()).tolist())

    def __len__(self) -> int:
        return self.size


class TrainingClips(torch.utils.data.Dataset):
    """Rows of a `load_video_dataset` table as training examples.

    A clip that cannot be read (corrupt, truncated, too short) is replaced by the first readable row of a random
    permutation (from the example's own generator), so every batch is full and every process takes the same number
    of steps; the example lists what it skipped (`"skipped"`: `(clip, reason)` pairs) for the loop to warn about once
    and count as distinct clips. An empty caption trains as `""`, as caption dropout does.

    Args:
        table (`datasets.Dataset`): `caption` and `video` columns (`load_video_dataset`); with `features_column`
            also the `TeacherFeatures` columns, whose invalid rows are dropped here.
        clip (`ClipSpec`): how clips are read.
        order (`DataOrder`, *optional*): seeds each example's crop, flip and stand-in draws (`DataOrder(0)`).
        id_token (`str`, *optional*): prepended to every caption (`--id_token`).
        random_flip (`bool`, defaults to False): flip each clip horizontally with probability 1/2.
        features_column (`str`, *optional*): the column of precomputed teacher features; each example then has
            them as `teacher_features` (float32 `(F, H, W, C)`) and the stored `motion_mask` (bool `(F, H, W)`).
    """

    def __init__(
        self,
        table: datasets.Dataset,
        clip: ClipSpec,
        *,
        order: DataOrder | None = None,
        id_token: str | None = None,
        random_flip: bool = False,
        features_column: str | None = None,
    ):
        if features_column is not None:
            valid = table[VALID_COLUMN] if VALID_COLUMN in table.column_names else [True] * len(table)
            unusable = len(valid) - sum(valid)
            if unusable:
                logger.warning(
                    "Skipping %d of %d rows whose teacher features could not be computed.", unusable, len(valid)
                )
                table = table.select([i for i, ok in enumerate(valid) if ok])
            self.stored_dtype = table.features[features_column].dtype
            table = table.with_format("numpy", columns=[features_column, MASK_COLUMN], output_all_columns=True)
        if len(table) == 0:
            raise DatasetError("The training dataset has no usable row.")
        self.num_empty_captions = sum(1 for caption in table[CAPTION] if not caption)
        if self.num_empty_captions:
            logger.warning(f"{self.num_empty_captions} of {len(table)} captions are empty: they train as \"\".")
        self.table, self.clip, self.features_column = table, clip, features_column
        self.order = order or DataOrder(0)
        self.id_token, self.random_flip = id_token, random_flip

    def __len__(self) -> int:
        return len(self.table)

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate's data loader at each epoch (also on worker copies of the dataset)."""
        self.order.set_epoch(epoch)

    def _rows(self, index: int, generator: torch.Generator) -> Iterator[int]:
        """`index`, then (drawn only if it is unreadable) every other row in a random order: no one row stands in
        for all the unreadable ones."""
        yield index
        yield from (int(row) for row in torch.randperm(len(self), generator=generator) if row != index)

    def __getitem__(self, index: int) -> dict:
        generator = self.order.generator(index)
        skipped = []
        for row in self._rows(index, generator):
            record = self.table[row]
            try:
                video = read_video(record[VIDEO], self.clip, generator=generator)
            except VideoDecodeError as err:
                skipped.append((err.source, err.reason))
                continue
            if self.random_flip and torch.rand((), generator=generator) < 0.5:
                video = video.flip(-1)
            caption = record[CAPTION] or ""
            caption = f"{self.id_token} {caption}" if self.id_token else caption
            example = {"video": video, "caption": caption, "skipped": skipped}
            if self.features_column is not None:
                example["teacher_features"] = decode_teacher_features(record[self.features_column], self.stored_dtype)
                example["motion_mask"] = torch.as_tensor(record[MASK_COLUMN]).bool()
            return example
        raise DatasetError(
            f"None of the {len(self)} clips can be read, e.g. {skipped[0][0]!r}: {skipped[0][1]} Check the video "
            "paths (`video_column`) and `ClipSpec.max_num_frames`."
        )


def collate_examples(examples: list[dict]) -> dict:
    """Stacks examples into a batch: `videos` `(B, T, C, H, W)`, `captions`, `skipped` (every `(clip, reason)`), and
    the teacher columns when present."""
    batch = {
        "videos": torch.stack([e["video"] for e in examples]),
        "captions": [e["caption"] for e in examples],
        "skipped": [pair for e in examples for pair in e["skipped"]],
    }
    for key in ("teacher_features", "motion_mask"):
        if key in examples[0]:
            batch[key] = torch.stack([e[key] for e in examples])
    return batch
