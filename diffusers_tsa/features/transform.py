"""What every precompute transform shares: each clip of a `datasets.map` batch decoded once, columns added from it,
tensors stored in a 2-byte dtype (or float32) and read back in that dtype, and a cache fingerprint that changes with
every setting. `TeacherFeatures` and `ModelInputs` are such transforms; `Precompute` runs several on one decode."""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import datasets
import numpy as np
import pyarrow as pa
import torch

from ..choices import STORAGE_DTYPES
from ..data import ClipSpec, read_video
from ..data.columns import true_rows
from ..errors import DatasetError, GridError, UsageError, VideoDecodeError


logger = logging.getLogger(__name__)


def array_feature(shape: Sequence[int], dtype: str) -> datasets.features.FeatureType:
    """The `datasets` type of a fixed-shape tensor column: `Array2D`..`Array5D`, a fixed-length `List` in 1D."""
    if len(shape) == 1:
        return datasets.List(datasets.Value(dtype), length=shape[0])
    if not 2 <= len(shape) <= 5:
        raise ValueError(f"A stored tensor has 1 to 5 dimensions, not {len(shape)} ({tuple(shape)}).")
    return getattr(datasets, f"Array{len(shape)}D")(tuple(shape), dtype)


def storage_bytes(storage_dtype: str) -> int:
    """Bytes a value takes in `storage_dtype`."""
    return torch.finfo(getattr(torch, storage_dtype)).bits // 8


def to_storage(tensor: torch.Tensor, storage_dtype: str) -> tuple[np.ndarray, list[bool]]:
    """`(B, ...)` floating values as stored in `storage_dtype` (bfloat16 as its uint16 bits), and per row whether they
    are all finite once stored (a NaN encoder, or values beyond float16's range)."""
    stored = tensor.detach().to(getattr(torch, storage_dtype))
    finite = stored.isfinite().flatten(1).all(dim=1).tolist()
    if storage_dtype == "bfloat16":
        return stored.view(torch.int16).cpu().numpy().view(np.uint16), finite
    return stored.cpu().numpy(), finite


def from_storage(values: np.ndarray) -> torch.Tensor:
    """A stored array back as a tensor with the same bytes: float16 and float32 as they are, uint16 as the bfloat16
    whose bits it holds, bool masks as bool (cast on the device, not here: 2-byte values stay 2 bytes)."""
    values = np.array(values)  # a writable copy of Arrow's read-only buffer
    if values.dtype == np.uint16:
        return torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(values)


def row_checksum(values: Sequence[np.ndarray | None]) -> int | None:
    """The CRC-32 of a row's stored arrays, in the order given, as stored (dtype and bytes); `None` for a row
    without values (unusable). Cheap beside decoding or the GPU step (see `benchmarks/bench_row_checksum.py`)."""
    if any(value is None for value in values):
        return None
    checksum = 0
    for value in values:
        checksum = zlib.crc32(np.ascontiguousarray(value).view(np.uint8), checksum)
    return checksum


def stored_value(row: pa.Table, column: str) -> np.ndarray:
    """One row's value of a tensor column of an Arrow-formatted table (`dataset.with_format("arrow")[i]`), in its
    stored dtype: `datasets`' numpy format would hand float16 as float32 and uint16 as int64."""
    values = row.column(column).combine_chunks()
    if isinstance(values.type, pa.ExtensionType):  # ArrayND
        return values.to_numpy(zero_copy_only=False)[0]
    return np.asarray(values[0].values)  # a fixed-length list


class ClipTransform(abc.ABC):
    """A `dataset.map(transform, batched=True)` transform that decodes each clip of a batch once (`read_video`, in
    parallel threads) and adds columns computed from the decoded clips (`columns`). Unreadable clips are logged and
    passed on as `None`; each transform marks them in its `valid_column` and counts them in `num_invalid`.

    Subclasses set `clip`, `video_column`, `decode_workers`, `features` (the added columns' types), `valid_column`,
    `description` (for the logs) and `settings()`, and implement `columns`.
    """

    description: str
    clip: ClipSpec
    video_column: str
    decode_workers: int
    features: datasets.Features
    valid_column: str
    num_invalid: int

    @staticmethod
    def check_storage(clip: ClipSpec, storage_dtype: str) -> None:
        """Raises `UsageError` for a storage dtype or a crop that cannot be precomputed (before any model loads)."""
        if storage_dtype not in STORAGE_DTYPES:
            raise UsageError(f"`storage_dtype={storage_dtype!r}` must be one of {sorted(STORAGE_DTYPES)}.")
        if clip.reshape_mode == "random":
            raise GridError(
                "Precomputed columns need a deterministic crop: `ClipSpec.reshape_mode='random'` must be 'center' "
                "or 'stretch', and training must read clips the same way."
            )

    @abc.abstractmethod
    def settings(self) -> dict:
        """Everything the added columns depend on, as JSON-ready values."""

    @abc.abstractmethod
    def columns(self, clips: list[torch.Tensor | None], batch: dict[str, list]) -> dict[str, list]:
        """The added columns of a `map` batch whose clips `(T, C, H, W)` are decoded (`None`: unreadable)."""

    @property
    def fingerprint(self) -> str:
        """A hash of `settings()`."""
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()

    def decode(self, sources: list) -> list[torch.Tensor | None]:
        """Each clip of `sources` read once, in parallel; `None` (and a warning) for an unreadable one."""

        def read(source) -> torch.Tensor | None:
            try:
                return read_video(source, self.clip)
            except VideoDecodeError as err:
                logger.warning("Skipping a clip: %s", err)
                return None

        with ThreadPoolExecutor(max_workers=max(1, min(self.decode_workers, len(sources)))) as pool:
            return list(pool.map(read, sources))

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        """Adds the columns to a `map` batch (see the class docstring)."""
        return self.columns(self.decode(batch[self.video_column]), batch)

    def fingerprint_for(self, dataset: datasets.Dataset) -> str:
        """`new_fingerprint` for mapping `dataset`: this transform's fingerprint joined with the dataset's, so two
        tables (or two shards) never share a cache file and a changed setting never reuses one."""
        return hashlib.sha256(f"{dataset._fingerprint}:{self.fingerprint}".encode()).hexdigest()[:32]

    def map(self, dataset: datasets.Dataset, *, batch_size: int = 16, **map_kwargs) -> datasets.Dataset:
        """`dataset.map(self, batched=True)` with the right column types and cache fingerprint.

        Args:
            dataset (`datasets.Dataset`): a table with `video_column`.
            batch_size (`int`, defaults to 16): rows per call (decoded in parallel, then encoded in batches).
            **map_kwargs: more `datasets.Dataset.map` arguments (`desc`, `load_from_cache_file`, ...).

        Returns:
            `datasets.Dataset`: `dataset` with the added columns; reuses (and logs reusing) the cache when nothing
            changed.
        """
        if self.video_column not in dataset.column_names:
            raise DatasetError(f"`video_column={self.video_column!r}`, but the dataset has {dataset.column_names}.")
        features = datasets.Features({**dataset.features, **self.features})
        map_kwargs.setdefault("desc", self.description.capitalize())
        started = time.time()
        mapped = dataset.map(
            self,
            batched=True,
            batch_size=batch_size,
            features=features,
            new_fingerprint=self.fingerprint_for(dataset),
            **map_kwargs,
        )
        cached = [f["filename"] for f in mapped.cache_files if os.path.getmtime(f["filename"]) < started]
        if cached and len(cached) == len(mapped.cache_files):
            logger.info("Reusing the %s cached in %s (same table and settings).", self.description, cached[0])
        for column in self.valid_columns:
            invalid = len(mapped) - len(true_rows(mapped, column))
            if invalid:
                logger.warning(
                    "%d of %d clips could not be used and are marked `%s = False`.", invalid, len(mapped), column
                )
        return mapped

    @property
    def valid_columns(self) -> list[str]:
        """The columns that say whether each row's added columns are usable."""
        return [self.valid_column]


class Precompute(ClipTransform):
    """Several transforms on one decode of each clip: e.g. `Precompute([ModelInputs(...), TeacherFeatures(...)])`
    adds the latents, the prompt embeddings and the teacher features in one pass over the videos.

    Args:
        transforms (`list[ClipTransform]`): transforms reading clips the same way (`clip`, `video_column`).
    """

    description = "precomputed columns"

    def __init__(self, transforms: list[ClipTransform]):
        first = transforms[0]
        for other in transforms[1:]:
            if (other.clip, other.video_column) != (first.clip, first.video_column):
                raise UsageError(
                    f"The transforms of one `Precompute` must read clips the same way: {type(first).__name__} has "
                    f"{first.clip} from {first.video_column!r}, {type(other).__name__} {other.clip} from "
                    f"{other.video_column!r}."
                )
        self.transforms = transforms
        self.clip, self.video_column = first.clip, first.video_column
        self.decode_workers = max(t.decode_workers for t in transforms)
        self.features = datasets.Features({k: v for t in transforms for k, v in t.features.items()})

    def settings(self) -> dict:
        return {type(t).__name__: t.settings() for t in self.transforms}

    @property
    def valid_columns(self) -> list[str]:
        return [column for t in self.transforms for column in t.valid_columns]

    @property
    def num_invalid(self) -> int:
        return max(t.num_invalid for t in self.transforms)

    def columns(self, clips: list[torch.Tensor | None], batch: dict[str, list]) -> dict[str, list]:
        return {k: v for t in self.transforms for k, v in t.columns(clips, batch).items()}
