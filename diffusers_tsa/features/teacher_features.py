"""The teacher's side of training, computed once: `teacher_targets`, the one computation of what M-TSA aligns to (run
online by training or once by `TeacherFeatures`), the `TeacherFeatures` transform that stores it in a table, and
`decode_teacher_features`, which reads a stored value back."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import datasets
import numpy as np
import torch

from ..data import ClipSpec, describe_source
from ..data.columns import FEATURES_CHECKSUM_COLUMN, FEATURES_COLUMN, MASK_COLUMN, SETTINGS_COLUMN, VALID_COLUMN
from ..loss_registry import MTSAOptions, check_option, registered_options
from ..masking import motion_saliency_mask
from ..teachers import VideoTeacher
from .transform import STORAGE_DTYPES, ClipTransform, from_storage, row_checksum, storage_bytes, to_storage


logger = logging.getLogger(__name__)

#: The version of the stored teacher columns, recorded in their settings; raised when their meaning changes.
FEATURES_FORMAT_VERSION = 3


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
    return from_storage(np.asarray(value, dtype=stored_dtype)).float()


class TeacherFeatures(ClipTransform):
    """A `dataset.map(tf, batched=True)` transform adding teacher features and motion masks to a video table.

    Each clip is decoded once (`read_video`); the same teacher frames give the features (`VideoTeacher.encode`) and
    the motion mask (`motion_saliency_mask` at the teacher's tubelet). Clips that cannot be used (unreadable, or
    whose features are not finite in the storage dtype) get `teacher_valid = False` and empty columns, are logged by
    name and counted in `num_invalid` (`num_non_finite` of them for non-finite features); nothing is raised.

    Added columns: `teacher_features` `(F, H, W, C)` (float16, float32, or bfloat16 bits as uint16), `motion_mask`
    `(F, H, W)` bool, `teacher_valid` bool, and `teacher_settings`, the JSON of `settings()` on every row, so that
    the settings travel with the data however it is mapped, saved, sharded or concatenated (training refuses
    features whose settings are missing or differ from its own); and `teacher_checksum`, the CRC-32 of the row's
    stored features and mask (`row_checksum`), which training checks when it reads the row.

    The transform works with a plain `dataset.map(tf, batched=True)` too; `map` adds the column types and a cache
    fingerprint that changes with every setting. `Precompute([ModelInputs(...), tf])` adds the latents and prompt
    embeddings on the same decode.

    Args:
        teacher (`VideoTeacher`): the teacher, already on its device and in its dtype.
        clip (`ClipSpec`): how the training clips are read; its crop must be deterministic (not `"random"`), since
            training must crop the clip where the features were computed.
        video_column (`str`, defaults to `"video"`): column of paths or `datasets.Video(decode=False)` values.
        storage_dtype (`str`, defaults to `"float16"`): `"float16"`, `"bfloat16"` or `"float32"`.
        mask_ratio (`float`, defaults to 0.2): share `k` of tokens kept per frame by the motion mask.
        teacher_batch_size (`int`, defaults to 4): clips per teacher forward.
        decode_workers (`int`, defaults to 4): threads decoding the clips of a `map` batch in parallel.
    """

    description = "teacher features"
    valid_column = VALID_COLUMN

    def __init__(
        self,
        teacher: VideoTeacher,
        clip: ClipSpec,
        *,
        video_column: str = "video",
        storage_dtype: str = "float16",
        mask_ratio: float = MTSAOptions.mask_ratio,
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
                FEATURES_CHECKSUM_COLUMN: datasets.Value("int64"),
            }
        )
        self.settings_json = json.dumps(self.settings(), sort_keys=True)

    @classmethod
    def check_settings(
        cls, clip: ClipSpec, *, storage_dtype: str = "float16", mask_ratio: float = MTSAOptions.mask_ratio
    ) -> None:
        """Raises `UsageError` for settings that cannot be precomputed (checked before any teacher is loaded)."""
        cls.check_storage(clip, storage_dtype)
        check_option(registered_options()["mask_ratio"], mask_ratio)  # M-TSA's option, one check

    def settings(self) -> dict:
        """Everything the added columns depend on (the teacher by its fingerprint), as JSON-ready values."""
        return {
            "format": FEATURES_FORMAT_VERSION,
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
        """Payload stored per usable clip: the feature values in the storage dtype and 1 byte per mask token."""
        return self.stored_bytes(self.teacher.grid, self.teacher.hidden_size, self.storage_dtype)

    @staticmethod
    def stored_bytes(grid: tuple[int, int, int], hidden_size: int, storage_dtype: str) -> int:
        """`bytes_per_clip` of a teacher with this token `grid` and width, known before it loads (its
        `TeacherGeometry`): the feature values in `storage_dtype` and 1 byte per mask token."""
        return int(np.prod(grid)) * (storage_bytes(storage_dtype) * hidden_size + 1)

    def columns(self, clips: list[torch.Tensor | None], batch: dict[str, list]) -> dict[str, list]:
        """The teacher columns of a `map` batch (see the class docstring)."""
        sources = batch[self.video_column]
        features, masks = [None] * len(clips), [None] * len(clips)
        decoded = [i for i, clip in enumerate(clips) if clip is not None]
        for start in range(0, len(decoded), self.teacher_batch_size):
            rows = decoded[start : start + self.teacher_batch_size]
            encoded, mask = teacher_targets(self.teacher, torch.stack([clips[i] for i in rows]), self.mask_ratio)
            (encoded, finite), mask = to_storage(encoded, self.storage_dtype), mask.cpu().numpy()
            for j, row in enumerate(rows):
                if finite[j]:
                    features[row], masks[row] = encoded[j], mask[j]
                else:
                    self.num_non_finite += 1
                    logger.warning(
                        "Skipping a clip: the teacher's features of %s are not finite in %s.",
                        describe_source(sources[row]),
                        self.storage_dtype,
                    )
        valid = [f is not None for f in features]
        self.num_invalid += len(valid) - sum(valid)
        return {
            FEATURES_COLUMN: features,
            MASK_COLUMN: masks,
            VALID_COLUMN: valid,
            SETTINGS_COLUMN: [self.settings_json] * len(valid),
            FEATURES_CHECKSUM_COLUMN: [row_checksum([f, m]) for f, m in zip(features, masks)],
        }
