"""Training examples from a caption/video table: decoded clips, captions, and precomputed teacher columns."""

from __future__ import annotations

import logging

import datasets
import torch

from ..data import ClipSpec, read_video
from ..errors import DatasetError, VideoDecodeError
from ..features import MASK_COLUMN, VALID_COLUMN, decode_teacher_features

logger = logging.getLogger(__name__)


class TrainingClips(torch.utils.data.Dataset):
    """Rows of a `load_video_dataset` table as training examples.

    A clip that cannot be read (corrupt, truncated, too short) is skipped: the next readable row stands in for it,
    so every batch is full and every process takes the same number of steps, and the example reports how many rows
    it skipped (`"skipped"`) for the loop to count and log.

    Args:
        table (`datasets.Dataset`): `caption` and `video` columns (`load_video_dataset`); with `features_column`
            also the `TeacherFeatures` columns, whose invalid rows are dropped here.
        clip (`ClipSpec`): how clips are read.
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
        id_token: str | None = None,
        random_flip: bool = False,
        features_column: str | None = None,
    ):
        if features_column is not None:
            valid = table[VALID_COLUMN] if VALID_COLUMN in table.column_names else [True] * len(table)
            unusable = len(valid) - sum(valid)
            if unusable:
                logger.warning("Skipping %d of %d rows whose teacher features could not be computed.", unusable, len(valid))
                table = table.select([i for i, ok in enumerate(valid) if ok])
            self.stored_dtype = table.features[features_column].dtype
            table = table.with_format("numpy", columns=[features_column, MASK_COLUMN], output_all_columns=True)
        if len(table) == 0:
            raise DatasetError("The training dataset has no usable row.")
        self.table, self.clip, self.features_column = table, clip, features_column
        self.id_token, self.random_flip = id_token, random_flip

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict:
        for skipped in range(len(self)):
            row = self.table[(index + skipped) % len(self)]
            try:
                video = read_video(row["video"], self.clip)
            except VideoDecodeError as err:
                logger.warning("Skipping a clip: %s", err)
                continue
            if self.random_flip and torch.rand(()) < 0.5:
                video = video.flip(-1)
            caption = f"{self.id_token} {row['caption']}" if self.id_token else row["caption"]
            example = {"video": video, "caption": caption, "skipped": skipped}
            if self.features_column is not None:
                example["teacher_features"] = decode_teacher_features(row[self.features_column], self.stored_dtype)
                example["motion_mask"] = torch.as_tensor(row[MASK_COLUMN]).bool()
            return example
        raise RuntimeError(f"None of the {len(self)} clips of the training dataset can be read; see the warnings.")


def collate_examples(examples: list[dict]) -> dict:
    """Stacks examples into a batch: `videos` `(B, T, C, H, W)`, `captions`, `skipped` (total), and the teacher
    columns when present."""
    batch = {
        "videos": torch.stack([e["video"] for e in examples]),
        "captions": [e["caption"] for e in examples],
        "skipped": sum(e["skipped"] for e in examples),
    }
    for key in ("teacher_features", "motion_mask"):
        if key in examples[0]:
            batch[key] = torch.stack([e[key] for e in examples])
    return batch
