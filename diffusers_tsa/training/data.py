"""Training examples from a caption/video table: decoded clips, captions, precomputed teacher columns, and the one
seed that orders them."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import datasets
import numpy as np
import pyarrow as pa
import torch

from ..adapters.adapter import ModelAdapter
from ..data import CAPTION, VIDEO, ClipSpec, read_video
from ..data.columns import (
    FEATURES_CHECKSUM_COLUMN,
    INPUTS_CHECKSUM_COLUMN,
    INPUTS_VALID_COLUMN,
    LATENTS_COLUMN,
    MASK_COLUMN,
    VALID_COLUMN,
    empty_mask,
    training_caption,
    true_mask,
)
from ..errors import DatasetError, VideoDecodeError
from ..features.transform import from_storage, row_checksum, stored_value


logger = logging.getLogger(__name__)


class _CorruptRow(Exception):
    """A precomputed row that cannot be read or fails its checksum: `source` names the file and row."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = source, reason


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


def validity_columns(
    table: datasets.Dataset, features_column: str | None, inputs_columns: Sequence[str]
) -> list[tuple[str, str]]:
    """The `(column, what it marks usable)` pairs of `table` that say which rows `TrainingClips` keeps, given the
    precomputed columns it reads."""
    pairs = [(VALID_COLUMN, "teacher features")] if features_column is not None else []
    pairs += [(INPUTS_VALID_COLUMN, "latents and prompt embeddings")] if inputs_columns else []
    return [(column, what) for column, what in pairs if column in table.column_names]


class TrainingClips(torch.utils.data.Dataset):
    """Rows of a `load_video_dataset` table as training examples.

    A clip that cannot be read (corrupt, truncated, too short) is replaced by the first readable row of a random
    permutation (from the example's own generator), so every batch is full and every process takes the same number
    of steps; the example lists what it skipped (`"skipped"`: `(clip, reason)` pairs) for the loop to warn about once
    and count as distinct clips. An empty caption trains as `""`, as caption dropout does.

    Precomputed columns (`TeacherFeatures`, `ModelInputs`) come in their stored dtype (float16 and bfloat16 stay 2
    bytes a value up to the device); rows marked unusable in them are dropped here. Each row read is checked against
    the checksum the precompute stored with it: a row that fails it, or cannot be read, is skipped as an unreadable
    clip is (named by file and row in `"skipped"`, and listed in `"corrupt_rows"` for `CorruptRows` to count). When nothing needs the pixels
    (`decode_videos=False`: the latents are precomputed and the teacher features too, or there is no alignment term),
    no clip is decoded at all.

    Args:
        table (`datasets.Dataset`): `caption` and `video` columns (`load_video_dataset`), and any precomputed ones.
        clip (`ClipSpec`): how clips are read.
        order (`DataOrder`, *optional*): seeds each example's crop, flip and stand-in draws (`DataOrder(0)`).
        id_token (`str`, *optional*): prepended to every caption (`--id_token`).
        random_flip (`bool`, defaults to False): flip each clip horizontally with probability 1/2.
        features_column (`str`, *optional*): the column of precomputed teacher features; each example then has
            them as `teacher_features` `(F, H, W, C)` and the stored `motion_mask` (bool `(F, H, W)`).
        inputs_columns (`Sequence[str]`, defaults to `()`): the precomputed model-input columns (`ModelInputs`):
            each example then has `latent_moments` `(2C, F, H, W)` and `text`, the other columns by name.
        decode_videos (`bool`, defaults to True): whether examples carry the decoded clip as `video` `(T, C, H, W)`.
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
        inputs_columns: Sequence[str] = (),
        decode_videos: bool = True,
    ):
        keep = np.ones(len(table), dtype=bool)  # every column read before `select`: Arrow's speed at any size
        for column, what in validity_columns(table, features_column, inputs_columns):
            usable = true_mask(table, column)
            skipped = int((keep & ~usable).sum())
            if skipped:
                logger.warning(
                    "Skipping %d of %d rows whose %s could not be computed.", skipped, int(keep.sum()), what
                )
            keep &= usable
        self.num_empty_captions = int(empty_mask(table, CAPTION)[keep].sum())
        if not keep.all():
            table = table.select(np.flatnonzero(keep))
        if len(table) == 0:
            raise DatasetError("The training dataset has no usable row.")
        if self.num_empty_captions:
            logger.warning(f'{self.num_empty_captions} of {len(table)} captions are empty: they train as "".')
        self.features_column, self.inputs_columns = features_column, list(inputs_columns)
        tensors = ([features_column, MASK_COLUMN, FEATURES_CHECKSUM_COLUMN] if features_column is not None else []) + (
            [*self.inputs_columns, INPUTS_CHECKSUM_COLUMN] if self.inputs_columns else []
        )
        files = sorted({f["filename"] for f in table.cache_files})
        self.source = files[0] if len(files) == 1 else (os.path.dirname(files[0]) if files else "the dataset")
        self.records = table.select_columns([CAPTION, VIDEO])
        self.arrays = table.select_columns(tensors).with_format("arrow") if tensors else None
        self.clip, self.decode_videos = clip, decode_videos
        self.order = order or DataOrder(0)
        self.id_token, self.random_flip = id_token, random_flip

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate's data loader at each epoch (also on worker copies of the dataset)."""
        self.order.set_epoch(epoch)

    def _rows(self, index: int, generator: torch.Generator) -> Iterator[int]:
        """`index`, then (drawn only if it is unreadable) every other row in a random order: no one row stands in
        for all the unreadable ones."""
        yield index
        yield from (int(row) for row in torch.randperm(len(self), generator=generator) if row != index)

    def _stored(self, row: int) -> dict:
        """The precomputed tensors of `row`, in their stored dtype, checked against their stored checksums.

        Raises:
            `_CorruptRow`: the row cannot be read, or its values are not those the precompute wrote.
        """
        if self.arrays is None:
            return {}
        groups = []
        if self.features_column is not None:
            groups.append(("teacher features", [self.features_column, MASK_COLUMN], FEATURES_CHECKSUM_COLUMN))
        if self.inputs_columns:
            groups.append(("latents and prompt embeddings", sorted(self.inputs_columns), INPUTS_CHECKSUM_COLUMN))
        try:
            arrays = self.arrays[row]
            values = {name: stored_value(arrays, name) for _, names, _ in groups for name in names}
            checksums = {column: arrays.column(column)[0].as_py() for _, _, column in groups}
        except (OSError, pa.ArrowException, IndexError, ValueError) as err:
            raise _CorruptRow(f"{self.source} row {row}", f"its precomputed values cannot be read ({err}).") from None
        for what, names, column in groups:
            if row_checksum([values[name] for name in names]) != checksums[column]:
                raise _CorruptRow(
                    f"{self.source} row {row}",
                    f"its {what} do not match the checksum stored with them (the file is damaged); precompute "
                    "again with `python -m diffusers_tsa.features`.",
                )
        example = {}
        if self.features_column is not None:
            example["teacher_features"] = from_storage(values[self.features_column])
            example["motion_mask"] = from_storage(values[MASK_COLUMN])
        if self.inputs_columns:
            example[LATENTS_COLUMN] = from_storage(values[LATENTS_COLUMN])
            example["text"] = {
                name: from_storage(values[name]) for name in self.inputs_columns if name != LATENTS_COLUMN
            }
        return example

    def __getitem__(self, index: int) -> dict:
        generator = self.order.generator(index)
        skipped, corrupt = [], []
        for row in self._rows(index, generator):
            try:
                stored = self._stored(row)
            except _CorruptRow as err:
                skipped.append((err.source, err.reason))
                corrupt.append(err.source)
                continue
            record = self.records[row]
            example = {
                "caption": training_caption(record[CAPTION], self.id_token),
                "skipped": skipped,
                "corrupt_rows": corrupt,
            }
            if self.decode_videos:
                try:
                    video = read_video(record[VIDEO], self.clip, generator=generator)
                except VideoDecodeError as err:
                    skipped.append((err.source, err.reason))
                    continue
                if self.random_flip and torch.rand((), generator=generator) < 0.5:
                    video = video.flip(-1)
                example["video"] = video
            return {**example, **stored}
        raise DatasetError(
            f"None of the {len(self)} clips can be read, e.g. {skipped[0][0]!r}: {skipped[0][1]} Check the video "
            "paths (`video_column`) and `ClipSpec.max_num_frames`."
        )


def collate_examples(examples: list[dict]) -> dict:
    """Stacks examples into a batch: `videos` `(B, T, C, H, W)` (when decoded), `captions`, `skipped` (every `(clip,
    reason)`), `corrupt_rows` (the precomputed rows among them), and the precomputed columns when present (`text` stays a dict of stacked tensors)."""
    batch = {
        "captions": [e["caption"] for e in examples],
        "skipped": [pair for e in examples for pair in e["skipped"]],
        "corrupt_rows": [row for e in examples for row in e["corrupt_rows"]],
    }
    if "video" in examples[0]:
        batch["videos"] = torch.stack([e["video"] for e in examples])
    for key in ("teacher_features", "motion_mask", LATENTS_COLUMN):
        if key in examples[0]:
            batch[key] = torch.stack([e[key] for e in examples])
    if "text" in examples[0]:
        batch["text"] = {name: torch.stack([e["text"][name] for e in examples]) for name in examples[0]["text"]}
    return batch


def model_inputs(adapter: ModelAdapter, batch: dict, *, dtype: torch.dtype) -> tuple[torch.Tensor, Any]:
    """The transformer's inputs of a batch: a latent sample of the stored posterior and the stored text-encoder
    outputs when the batch has them (`ModelInputs`), else the encoded videos and captions; floating values in `dtype`
    (that of the frozen weights) on the adapter's device. An image-to-video run conditions on the clips' first frames
    (`image_encoder_outputs` of `videos[:, 0]`, after the same crop and flip; stored beside the text outputs by the
    precompute), given to `conditioning` in one dict with the text outputs."""
    if LATENTS_COLUMN not in batch:
        videos = batch["videos"]
        if not adapter.options.image_to_video:
            return adapter.encode_videos(videos), adapter.encode_prompts(batch["captions"])
        outputs = adapter.text_encoder_outputs(batch["captions"])
        return adapter.encode_videos(videos), adapter.conditioning(
            {**outputs, **adapter.image_encoder_outputs(videos[:, 0], videos)}
        )
    device = adapter.transformer.device
    moments = batch[LATENTS_COLUMN].to(device, dtype)
    return adapter.sample_latents(moments), adapter.conditioning(floating_to(batch["text"], device, dtype))


def floating_to(tensors: dict[str, torch.Tensor], device: torch.device | str, dtype: torch.dtype) -> dict:
    """`tensors` on `device`, the floating ones in `dtype` (masks keep theirs)."""
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in tensors.items()}
