"""Teacher targets (features and motion masks) of training clips, and a `datasets.map` transform that stores them.

`teacher_targets` is the one computation of what M-TSA aligns to, run online by training or once by `TeacherFeatures`;
training then reads `teacher_features` (F, H, W, C) and `motion_mask` (F, H, W) from the dataset and never runs the
teacher. The command line (one GPU or many, each process maps its own shard) is `python -m diffusers_tsa.features`:

    accelerate launch -m diffusers_tsa.features --dataset_name clips.csv --video_column video \\
        --teacher_model_name_or_path videomaev2-base-distilled --output_dir clips-vmae2
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import datasets
import numpy as np
import torch

from ..data import ClipSpec, describe_source, read_video
from ..data.columns import FEATURES_COLUMN, MASK_COLUMN, SETTINGS_COLUMN, VALID_COLUMN
from ..errors import DatasetError, GridError, UsageError, VideoDecodeError
from ..masking import motion_saliency_mask
from ..teachers import VideoTeacher

logger = logging.getLogger(__name__)

#: Storage dtype -> Arrow dtype of the column: Arrow has no bfloat16, so its bits are stored as uint16.
STORAGE_DTYPES = {"float16": "float16", "bfloat16": "uint16"}
_FORMAT_VERSION = 2


@torch.no_grad()
def teacher_targets(
    teacher: VideoTeacher, video: torch.Tensor, mask_ratio: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What TSA aligns to for training clips: the teacher's features (Eq. 4) and the M-TSA queries (Eq. 11-12),
    both from the one selection of frames the teacher sees (`teacher.prepare`).

    Args:
        teacher (`VideoTeacher`): the teacher, on its device and in its dtype.
        video (`torch.Tensor`): clips in [-1, 1] of shape `(B, T, C, H, W)`, on any device.
        mask_ratio (`float`, *optional*): share `k` of the most dynamic tokens kept per frame; `None` computes no mask.

    Returns:
        `tuple[torch.Tensor, torch.Tensor | None]`: features `(B, F, H, W, C)` in the teacher's dtype, and the bool
        motion mask `(B, F, H, W)` (or `None`), on the teacher's device.
    """
    frames = teacher.prepare(video.to(teacher.mean.device))
    mask = None if mask_ratio is None else motion_saliency_mask(frames, tubelet=teacher.tubelet, ratio=mask_ratio)
    return teacher.encode_prepared(frames), mask


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
    the motion mask (`motion_saliency_mask` at the teacher's tubelet). Clips that cannot be used (unreadable, or
    whose features are not finite in the storage dtype) get `teacher_valid = False` and empty columns, are logged by
    name and counted in `num_invalid` (`num_non_finite` of them for non-finite features); nothing is raised.

    Added columns: `teacher_features` `(F, H, W, C)` (float16, or bfloat16 bits as uint16), `motion_mask`
    `(F, H, W)` bool, `teacher_valid` bool, and `teacher_settings`, the JSON of `settings()` on every row, so that
    the settings travel with the data however it is mapped, saved, sharded or concatenated (training refuses
    features whose settings are missing or differ from its own).

    The transform works with a plain `dataset.map(tf, batched=True)` too; `map` adds the column types and a cache
    fingerprint that changes with every setting.

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
        self.check_settings(clip, storage_dtype=storage_dtype, mask_ratio=mask_ratio)
        self.teacher = teacher
        self.clip = clip
        self.video_column = video_column
        self.storage_dtype = storage_dtype
        self.mask_ratio = mask_ratio
        self.teacher_batch_size = teacher_batch_size
        self.decode_workers = decode_workers
        self.num_invalid = 0
        self.num_non_finite = 0
        grid = teacher.grid
        self.features = datasets.Features(
            {
                FEATURES_COLUMN: datasets.Array4D((*grid, teacher.hidden_size), STORAGE_DTYPES[storage_dtype]),
                MASK_COLUMN: datasets.Array3D(grid, "bool"),
                VALID_COLUMN: datasets.Value("bool"),
                SETTINGS_COLUMN: datasets.Value("string"),
            }
        )
        self.settings_json = json.dumps(self.settings(), sort_keys=True)
        self.fingerprint = hashlib.sha256(self.settings_json.encode()).hexdigest()

    @staticmethod
    def check_settings(clip: ClipSpec, *, storage_dtype: str = "float16", mask_ratio: float = 0.2) -> None:
        """Raises `UsageError` for settings that cannot be precomputed (checked before any teacher is loaded)."""
        if storage_dtype not in STORAGE_DTYPES:
            raise UsageError(f"`storage_dtype={storage_dtype!r}` must be one of {sorted(STORAGE_DTYPES)}.")
        if clip.reshape_mode == "random":
            raise GridError(
                "Precomputed features need a deterministic crop: `ClipSpec.reshape_mode='random'` must be 'center' "
                "or 'none', and training must read clips the same way."
            )
        if not 0.0 < mask_ratio <= 1.0:
            raise UsageError(f"`mask_ratio={mask_ratio}` must be in (0, 1].")

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

    def _store(self, features: torch.Tensor) -> tuple[np.ndarray, list[bool]]:
        """The stored values of `(B, F, H, W, C)` features and, per clip, whether they are all finite once stored
        (a NaN teacher, or values beyond float16's range)."""
        stored = features.to(getattr(torch, self.storage_dtype))
        finite = stored.isfinite().flatten(1).all(dim=1).tolist()
        if self.storage_dtype == "bfloat16":
            return stored.view(torch.int16).cpu().numpy().view(np.uint16), finite
        return stored.cpu().numpy(), finite

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        """Adds the three columns to a `map` batch (see the class docstring)."""
        sources = batch[self.video_column]
        with ThreadPoolExecutor(max_workers=max(1, min(self.decode_workers, len(sources)))) as pool:
            clips = list(pool.map(self._decode, sources))
        features, masks = [None] * len(clips), [None] * len(clips)
        decoded = [i for i, clip in enumerate(clips) if clip is not None]
        for start in range(0, len(decoded), self.teacher_batch_size):
            rows = decoded[start : start + self.teacher_batch_size]
            encoded, mask = teacher_targets(self.teacher, torch.stack([clips[i] for i in rows]), self.mask_ratio)
            (encoded, finite), mask = self._store(encoded), mask.cpu().numpy()
            for j, row in enumerate(rows):
                if finite[j]:
                    features[row], masks[row] = encoded[j], mask[j]
                else:
                    self.num_non_finite += 1
                    logger.warning(
                        "Skipping a clip: the teacher's features of %s are not finite in %s.",
                        describe_source(sources[row]), self.storage_dtype,
                    )
        valid = [f is not None for f in features]
        self.num_invalid += len(valid) - sum(valid)
        return {
            FEATURES_COLUMN: features, MASK_COLUMN: masks, VALID_COLUMN: valid,
            SETTINGS_COLUMN: [self.settings_json] * len(valid),
        }

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
            `datasets.Dataset`: `dataset` with the four added columns; reuses (and logs reusing) the cache when nothing
            changed.
        """
        if self.video_column not in dataset.column_names:
            raise DatasetError(f"`video_column={self.video_column!r}`, but the dataset has {dataset.column_names}.")
        features = datasets.Features({**dataset.features, **self.features})
        map_kwargs.setdefault("desc", "Teacher features")
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
            logger.info("Reusing the teacher features cached in %s (same table and settings).", cached[0])
        invalid = len(mapped) - sum(mapped[VALID_COLUMN])
        if invalid:
            logger.warning(
                "%d of %d clips could not be used and are marked `%s = False`.", invalid, len(mapped), VALID_COLUMN
            )
        return mapped
