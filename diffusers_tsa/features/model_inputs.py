"""The student's frozen inputs of training clips, computed once: the VAE posterior and the text encoder's outputs.

Training on them loads neither the VAE encoder nor the text encoder, and still draws a fresh latent sample from the
stored posterior at every step (as finetrainers does), so the objective is the one trained from the videos.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict

import datasets
import torch

from ..adapters.adapter import ModelAdapter
from ..adapters.spec import ModelSpec
from ..data import ClipSpec, describe_source
from ..data.columns import (
    CAPTION,
    INPUTS_CHECKSUM_COLUMN,
    INPUTS_SETTINGS_COLUMN,
    INPUTS_VALID_COLUMN,
    LATENTS_COLUMN,
    training_caption,
)
from .transform import STORAGE_DTYPES, ClipTransform, array_feature, row_checksum, storage_bytes, to_storage


logger = logging.getLogger(__name__)

#: The version of the stored model-input columns, recorded in their settings; raised when their meaning changes.
INPUTS_FORMAT_VERSION = 2


def model_identity_of(spec: ModelSpec) -> dict:
    """The checkpoint precomputed inputs belong to: its family, name (a local folder as its absolute path) and
    revision."""
    name = spec.pretrained_model_name_or_path
    return {
        "family": spec.family,
        "pretrained_model_name_or_path": os.path.abspath(name) if os.path.isdir(name) else name,
        "revision": spec.revision,
    }


class ModelInputs(ClipTransform):
    """A `dataset.map(mi, batched=True)` transform adding what the student's frozen encoders give for each row.

    Added columns: `latent_moments` `(2C, F, H, W)`, the VAE posterior over the family's latents (mean, then
    log-variance, on the channels: `ModelAdapter.latent_moments`), one column per text-encoder output
    (`ModelAdapter.text_encoder_outputs`: `prompt_embeds` `(L, D)`, and `prompt_attention_mask` `(L,)` where the family
    has one), stored in `storage_dtype` (masks as they are); `inputs_valid` bool; and `inputs_settings`, the JSON of
    `settings()` on every row, which training compares with its own flags; `inputs_checksum`, the CRC-32 of the row's
    stored inputs (`row_checksum`, the columns by sorted name), which training checks when it reads the row. A row whose clip cannot be read, or whose
    values are not finite once stored, gets `inputs_valid = False` and empty columns (logged, counted in
    `num_invalid`).

    Args:
        adapter (`ModelAdapter`): the student's adapter with its VAE and text encoder, on their device.
        clip (`ClipSpec`): how the training clips are read; its crop must be deterministic.
        caption_column (`str`, defaults to `"caption"`): the captions.
        video_column (`str`, defaults to `"video"`): the clips.
        id_token (`str`, *optional*): prepended to every caption, as training's `--id_token`.
        variant (`str`, *optional*): the weights variant the encoders were loaded with (recorded, not checked: the
            same weights in another precision).
        storage_dtype (`str`, defaults to `"float16"`): `"float16"`, `"bfloat16"` or `"float32"`.
        vae_batch_size (`int`, defaults to 1): clips per VAE forward.
        decode_workers (`int`, defaults to 4): threads decoding the clips of a `map` batch in parallel.
    """

    description = "latents and prompt embeddings"
    valid_column = INPUTS_VALID_COLUMN

    def __init__(
        self,
        adapter: ModelAdapter,
        clip: ClipSpec,
        *,
        caption_column: str = CAPTION,
        video_column: str = "video",
        id_token: str | None = None,
        variant: str | None = None,
        storage_dtype: str = "float16",
        vae_batch_size: int = 1,
        decode_workers: int = 4,
    ):
        self.check_storage(clip, storage_dtype)
        self.adapter, self.clip = adapter, clip
        self.caption_column, self.video_column, self.id_token = caption_column, video_column, id_token
        self.variant, self.storage_dtype = variant, storage_dtype
        self.vae_batch_size, self.decode_workers = vae_batch_size, decode_workers
        self.num_invalid = 0
        # The stored shapes, from one blank clip and one empty prompt.
        blank = torch.zeros(1, clip.num_frames, 3, clip.height, clip.width)
        shapes = {LATENTS_COLUMN: adapter.latent_moments(blank)}
        shapes.update(adapter.text_encoder_outputs([""]))
        if adapter.options.image_to_video:
            shapes.update(adapter.image_encoder_outputs(blank[:, 0], blank))
        self.shapes = {name: tuple(value.shape[1:]) for name, value in shapes.items()}
        self.floating = {name: value.is_floating_point() for name, value in shapes.items()}
        self.features = datasets.Features(
            {
                **{
                    name: array_feature(shape, STORAGE_DTYPES[storage_dtype] if self.floating[name] else "bool")
                    for name, shape in self.shapes.items()
                },
                INPUTS_VALID_COLUMN: datasets.Value("bool"),
                INPUTS_SETTINGS_COLUMN: datasets.Value("string"),
                INPUTS_CHECKSUM_COLUMN: datasets.Value("int64"),
            }
        )
        self.settings_json = json.dumps(self.settings(), sort_keys=True)

    def settings(self) -> dict:
        """Everything the added columns depend on, as JSON-ready values."""
        return {
            "format": INPUTS_FORMAT_VERSION,
            "model": model_identity_of(self.adapter.spec),
            "variant": self.variant,
            "max_sequence_length": self.adapter.options.max_sequence_length,  # resolved: never None
            "clip": asdict(self.clip),
            "id_token": self.id_token,
            "caption_column": self.caption_column,
            "video_column": self.video_column,
            "storage_dtype": self.storage_dtype,
            "columns": {name: list(shape) for name, shape in self.shapes.items()},
            # Recorded for image-to-video inputs only: text-to-video settings stay those of earlier precomputes.
            **(
                {
                    "image_to_video": True,
                    "first_frame_conditioning_p": self.adapter.options.first_frame_conditioning_p,
                }
                if self.adapter.options.image_to_video
                else {}
            ),
        }

    @staticmethod
    def min_bytes_per_clip(spec: ModelSpec, clip: ClipSpec, storage_dtype: str) -> int:
        """A lower bound of `bytes_per_clip` known from the model's configs alone, before its encoders load: the
        latent moments (a mean and a variance) of at least one value per video token (`spec.token_grid`); the
        prompt embeddings are not counted."""
        return 2 * math.prod(spec.token_grid(clip.num_frames, clip.height, clip.width)) * storage_bytes(storage_dtype)

    @property
    def bytes_per_clip(self) -> int:
        """Payload stored per usable clip (floating values in the storage dtype, masks 1 byte a value)."""
        size = storage_bytes(self.storage_dtype)
        return sum((size if self.floating[name] else 1) * math.prod(shape) for name, shape in self.shapes.items())

    def _stored(self, values: dict[str, torch.Tensor]) -> tuple[dict[str, list], list[bool]]:
        """`(B, ...)` encoder outputs as stored, and per row whether every floating value is finite once stored."""
        stored, finite = {}, [True] * next(iter(values.values())).shape[0]
        for name, value in values.items():
            if value.is_floating_point():
                stored[name], ok = to_storage(value, self.storage_dtype)
                finite = [a and b for a, b in zip(finite, ok)]
            else:
                stored[name] = value.bool().cpu().numpy()
        return {name: list(value) for name, value in stored.items()}, finite

    def encode(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Clips `(B, T, C, H, W)` -> their `latent_moments`, and in an image-to-video run the
        `image_encoder_outputs` of their first frames, by column name."""
        values = {LATENTS_COLUMN: self.adapter.latent_moments(videos)}
        if self.adapter.options.image_to_video:
            values.update(self.adapter.image_encoder_outputs(videos[:, 0], videos))
        return values

    def columns(self, clips: list[torch.Tensor | None], batch: dict[str, list]) -> dict[str, list]:
        """The model-input columns of a `map` batch (see the class docstring)."""
        sources = batch[self.video_column]
        rows = [i for i, clip in enumerate(clips) if clip is not None]
        out = {name: [None] * len(clips) for name in self.shapes}
        if rows:
            prompts = [training_caption(batch[self.caption_column][i], self.id_token) for i in rows]
            encoded = [
                self.encode(torch.stack([clips[i] for i in rows[start : start + self.vae_batch_size]]))
                for start in range(0, len(rows), self.vae_batch_size)
            ]
            values = {name: torch.cat([e[name] for e in encoded]) for name in encoded[0]}
            stored, finite = self._stored({**values, **self.adapter.text_encoder_outputs(prompts)})
            for j, row in enumerate(rows):
                if finite[j]:
                    for name in out:
                        out[name][row] = stored[name][j]
                else:
                    logger.warning(
                        "Skipping a clip: the latents or prompt embeddings of %s are not finite in %s.",
                        describe_source(sources[row]),
                        self.storage_dtype,
                    )
        valid = [value is not None for value in out[LATENTS_COLUMN]]
        self.num_invalid += len(valid) - sum(valid)
        checksums = [row_checksum([out[name][row] for name in sorted(out)]) for row in range(len(valid))]
        return {
            **out,
            INPUTS_VALID_COLUMN: valid,
            INPUTS_SETTINGS_COLUMN: [self.settings_json] * len(valid),
            INPUTS_CHECKSUM_COLUMN: checksums,
        }
