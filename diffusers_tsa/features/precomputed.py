"""A table of precomputed teacher features, read for training: the settings its rows were made with, checked against
the training ones, and its columns typed as `TeacherFeatures` declares them."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Mapping

import datasets

from ..data import ClipSpec
from ..errors import DatasetError, UsageError
from . import _FORMAT_VERSION, MASK_COLUMN, SETTINGS_COLUMN, STORAGE_DTYPES

_PRECOMPUTE_AGAIN = "precompute them again with `python -m diffusers_tsa.features` (or `TeacherFeatures`)"


def precomputed_settings(table: datasets.Dataset, features_column: str) -> dict:
    """The settings (`TeacherFeatures.settings()`) every row of `table` was made with.

    Raises:
        `DatasetError`: the table has no settings column (features made by hand or by an older version), or its
            rows were made with different settings (e.g. concatenated from two runs).
    """
    if SETTINGS_COLUMN not in table.column_names:
        raise DatasetError(
            f"`teacher_features_column={features_column!r}` has no '{SETTINGS_COLUMN}' column beside it, so the "
            f"settings its features were made with are unknown; {_PRECOMPUTE_AGAIN}."
        )
    recorded = [value for value in table.unique(SETTINGS_COLUMN) if value is not None]
    if len(recorded) != 1:
        raise DatasetError(
            f"The rows of `teacher_features_column={features_column!r}` were made with {len(recorded)} different "
            f"settings ('{SETTINGS_COLUMN}'); train on features made in one pass, or {_PRECOMPUTE_AGAIN}."
        )
    settings = json.loads(recorded[0])
    if settings.get("format") != _FORMAT_VERSION:
        raise DatasetError(
            f"`teacher_features_column={features_column!r}` was made by another version of diffusers-tsa (format "
            f"{settings.get('format')}, this one reads {_FORMAT_VERSION}); {_PRECOMPUTE_AGAIN}."
        )
    return settings


def check_precomputed_settings(
    settings: dict, *, clip: ClipSpec, mask_ratio: float, teacher_input: Mapping[str, int] | None = None
) -> None:
    """Compares the settings precomputed features were made with to the training ones.

    Args:
        settings (`dict`): `precomputed_settings(table, ...)`.
        clip (`ClipSpec`): how training reads clips.
        mask_ratio (`float`): the M-TSA share `k` training uses.
        teacher_input (`Mapping[str, int]`, *optional*): the `TeacherInput` fields training was given
            (`num_frames`, `height`, `width`; only those set).

    Raises:
        `UsageError`: naming each setting that differs, as recorded and as given.
    """
    recorded = {f"ClipSpec.{key}": value for key, value in settings["clip"].items()}
    recorded["mask_ratio"] = settings["mask_ratio"]
    recorded.update({f"TeacherInput.{key}": value for key, value in settings["teacher_input"].items()})
    given = {f"ClipSpec.{key}": value for key, value in asdict(clip).items()}
    given["mask_ratio"] = mask_ratio
    given.update({f"TeacherInput.{key}": value for key, value in (teacher_input or {}).items()})
    differ = [name for name in given if recorded.get(name) != given[name]]
    if differ:
        raise UsageError(
            "The precomputed teacher features were made with "
            + ", ".join(f"`{name}={recorded.get(name)!r}`" for name in differ)
            + ", but training is given "
            + ", ".join(f"`{name}={given[name]!r}`" for name in differ)
            + f"; pass the same settings, or {_PRECOMPUTE_AGAIN}."
        )


def typed_precomputed_table(table: datasets.Dataset, features_column: str) -> datasets.Dataset:
    """`table` with its features and mask columns of the types its settings declare (a plain
    `dataset.map(TeacherFeatures(...))` infers nested lists instead); unchanged when they already are."""
    settings = precomputed_settings(table, features_column)
    grid = tuple(settings["grid"])
    expected = {
        features_column: datasets.Array4D((*grid, settings["hidden_size"]), STORAGE_DTYPES[settings["storage_dtype"]]),
        MASK_COLUMN: datasets.Array3D(grid, "bool"),
    }
    for column, feature in expected.items():
        if column in table.column_names and table.features[column] != feature:
            table = table.cast_column(column, feature)
    return table
