"""Column names of the tables diffusers-tsa reads and writes, and reading a whole column at Arrow's speed.

The names import nothing heavy (the commands' flags use them before parsing); the readers import pyarrow on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np


if TYPE_CHECKING:
    import datasets
    import pyarrow as pa


#: The caption and video columns of every table `load_video_dataset` returns (and of what the features CLI saves).
CAPTION = "caption"
VIDEO = "video"

#: The columns `TeacherFeatures` adds: features `(F, H, W, C)`, motion mask `(F, H, W)`, whether the clip was usable,
#: and on every row the JSON of the settings the row was made with (they travel with the data).
FEATURES_COLUMN = "teacher_features"
MASK_COLUMN = "motion_mask"
VALID_COLUMN = "teacher_valid"
SETTINGS_COLUMN = "teacher_settings"
#: The CRC-32 of a usable row's stored features and mask, checked when training reads the row.
FEATURES_CHECKSUM_COLUMN = "teacher_checksum"

#: The columns `ModelInputs` adds: the VAE posterior in the model's latent space `(2C, F, H, W)` (mean and
#: log-variance), each text-encoder output by its name (e.g. `prompt_embeds` `(L, D)`), whether the row is usable, and
#: the settings JSON on every row.
LATENTS_COLUMN = "latent_moments"
INPUTS_VALID_COLUMN = "inputs_valid"
INPUTS_SETTINGS_COLUMN = "inputs_settings"
#: The CRC-32 of a usable row's stored model inputs (its columns by sorted name), checked when training reads the row.
INPUTS_CHECKSUM_COLUMN = "inputs_checksum"


def training_caption(caption: str | None, id_token: str | None = None) -> str:
    """The prompt a caption trains as: `""` for an empty one (as caption dropout trains), after `id_token` if given."""
    caption = caption or ""
    return f"{id_token} {caption}" if id_token else caption


def arrow_column(table: datasets.Dataset, name: str) -> pa.ChunkedArray:
    """Column `name` of `table` as Arrow, in the table's row order: no row is formatted in Python, so it costs
    milliseconds at a million rows where `table[name]` formats each row (a table with an indices mapping, from
    `select` or `shuffle`, is gathered row by row by datasets: read its columns before selecting)."""
    return table.with_format("arrow")[name]


def true_mask(table: datasets.Dataset, *names: str) -> np.ndarray:
    """Whether each row's bool columns `names` are all true (a null counts as false): bool `(len(table),)`; all true
    when no column is named."""
    import pyarrow.compute as pc

    usable = np.ones(len(table), dtype=bool)
    arrows = table.with_format("arrow")  # once: formatting copies datasets' description of every Arrow block
    for name in names:
        usable &= pc.fill_null(arrows[name], False).to_numpy(zero_copy_only=False)
    return usable


def true_rows(table: datasets.Dataset, *names: str) -> np.ndarray:
    """The positions of the rows whose bool columns `names` are all true (`true_mask`), ascending."""
    return np.flatnonzero(true_mask(table, *names))


def empty_mask(table: datasets.Dataset, name: str) -> np.ndarray:
    """Whether each row of the string column `name` is null or `""`: bool `(len(table),)`."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(arrow_column(table, name), ""), True).to_numpy(zero_copy_only=False)
