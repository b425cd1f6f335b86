"""A table of precomputed columns (teacher features, model inputs), read for training: the settings its rows were made
with, checked against the training ones, and its columns typed as `TeacherFeatures` and `ModelInputs` declare them."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Mapping

import datasets
import pyarrow.compute as pc

from ..adapters.spec import ModelSpec
from ..data import ClipSpec
from ..data.columns import INPUTS_SETTINGS_COLUMN, MASK_COLUMN, SETTINGS_COLUMN, arrow_column
from ..data.video import recorded_clip_settings
from ..errors import DatasetError, UsageError
from ..loss_registry import LossOptions, target_options
from .model_inputs import INPUTS_FORMAT_VERSION, model_identity_of
from .teacher_features import FEATURES_FORMAT_VERSION
from .transform import STORAGE_DTYPES, array_feature


_PRECOMPUTE_AGAIN = "precompute them again with `python -m diffusers_tsa.features` (or `TeacherFeatures`)"
_INPUTS_AGAIN = (
    "precompute them again with `python -m diffusers_tsa.features --pretrained_model_name_or_path ...` (or "
    "`ModelInputs`)"
)


def recorded_settings(
    table: datasets.Dataset, settings_column: str, what: str, format_version: int, again: str
) -> dict:
    """The settings JSON every row of `table` holds in `settings_column` (`what` the columns are, `again` how to make
    them anew, for the errors).

    Raises:
        `DatasetError`: the table has no settings column (made by hand or by an older version), or its rows were made
            with different settings (e.g. concatenated from two runs), or by another format version.
    """
    if settings_column not in table.column_names:
        raise DatasetError(
            f"The {what} have no '{settings_column}' column beside them, so the settings they were made with are "
            f"unknown; {again}."
        )
    recorded = pc.unique(pc.drop_null(arrow_column(table, settings_column))).to_pylist()  # Arrow, not Python rows
    if len(recorded) != 1:
        raise DatasetError(
            f"The rows of the {what} were made with {len(recorded)} different settings ('{settings_column}'); train "
            f"on columns made in one pass, or {again}."
        )
    settings = json.loads(recorded[0])
    if settings.get("format") != format_version:
        raise DatasetError(
            f"The {what} were made by another version of diffusers-tsa (format {settings.get('format')}, this one "
            f"reads {format_version}); {again}."
        )
    if "clip" in settings:
        settings["clip"] = recorded_clip_settings(settings["clip"])
    return settings


def refuse_differences(what: str, recorded: Mapping[str, object], given: Mapping[str, object], again: str) -> None:
    """Raises `UsageError` naming each setting of `given` that differs from `recorded`, as recorded and as given
    (`what` the precomputed columns are, `again` how to make them anew)."""
    differ = [name for name in given if recorded.get(name) != given[name]]
    if differ:
        raise UsageError(
            f"The precomputed {what} were made with "
            + ", ".join(f"`{name}={recorded.get(name)!r}`" for name in differ)
            + ", but training is given "
            + ", ".join(f"`{name}={given[name]!r}`" for name in differ)
            + f"; pass the same settings, or {again}."
        )


def precomputed_settings(table: datasets.Dataset, features_column: str) -> dict:
    """The settings (`TeacherFeatures.settings()`) every row of `table` was made with (`recorded_settings`)."""
    what = f"teacher features of `teacher_features_column={features_column!r}`"
    return recorded_settings(table, SETTINGS_COLUMN, what, FEATURES_FORMAT_VERSION, _PRECOMPUTE_AGAIN)


def inputs_settings(table: datasets.Dataset) -> dict:
    """The settings (`ModelInputs.settings()`) every row of `table` was made with (`recorded_settings`)."""
    return recorded_settings(
        table,
        INPUTS_SETTINGS_COLUMN,
        "precomputed latents and prompt embeddings",
        INPUTS_FORMAT_VERSION,
        _INPUTS_AGAIN,
    )


def check_inputs_settings(settings: dict, spec: ModelSpec, given: Mapping[str, object]) -> None:
    """Compares the settings precomputed model inputs were made with to training's.

    Args:
        settings (`dict`): `inputs_settings(table)`.
        spec (`ModelSpec`): the student as training trains it (`for_training`): its checkpoint (`model_identity_of`)
            and its text length (`options.max_sequence_length`, the family's default filled in). A
            `max_sequence_length` recorded as `None` (inputs precomputed before the precompute recorded the resolved
            length) is the family's default.
        given (`Mapping[str, object]`): training's other values by the names errors use: `id_token` and the
            `ClipSpec.*` fields (see `ModelInputs.settings`).

    Raises:
        `UsageError`: naming each setting that differs, as recorded and as given.
    """
    recorded = {
        **settings["model"],
        "max_sequence_length": spec.resolve_max_sequence_length(settings["max_sequence_length"]),
        "id_token": settings["id_token"],
        "image_to_video": settings.get("image_to_video", False),
        "first_frame_conditioning_p": settings.get("first_frame_conditioning_p"),
    }
    recorded.update({f"ClipSpec.{key}": value for key, value in settings["clip"].items()})
    given = {
        **model_identity_of(spec),
        "max_sequence_length": spec.options.max_sequence_length,
        "image_to_video": spec.options.image_to_video,
        "first_frame_conditioning_p": spec.options.first_frame_conditioning_p,
        **given,
    }
    refuse_differences("latents and prompt embeddings", recorded, given, _INPUTS_AGAIN)


def typed_inputs_table(table: datasets.Dataset, settings: dict) -> datasets.Dataset:
    """`table` with its model-input columns of the types `ModelInputs` declares (a plain `dataset.map` infers nested
    lists); unchanged when they already are."""
    dtype = STORAGE_DTYPES[settings["storage_dtype"]]
    for column, shape in settings["columns"].items():
        stored = table.features[column]
        leaf = stored
        while hasattr(leaf, "feature"):
            leaf = leaf.feature
        feature = array_feature(shape, "bool" if getattr(leaf, "dtype", dtype) == "bool" else dtype)
        if stored != feature:
            table = table.cast_column(column, feature)
    return table


def check_precomputed_settings(
    settings: dict, *, clip: ClipSpec, options: LossOptions, teacher_input: Mapping[str, int] | None = None
) -> None:
    """Compares the settings precomputed features were made with to the training ones.

    Args:
        settings (`dict`): `precomputed_settings(table, ...)`.
        clip (`ClipSpec`): how training reads clips.
        options (`LossOptions`): the options of training's alignment loss; those that shape the teacher targets
            (`target_options`: M-TSA's `mask_ratio`) must be the ones recorded.
        teacher_input (`Mapping[str, int]`, *optional*): the `TeacherInput` fields training was given
            (`num_frames`, `height`, `width`, `drop_first_frame`, `frame_pooling`; only those set).

    Raises:
        `UsageError`: naming each setting that differs, as recorded and as given.
    """
    given = {f"ClipSpec.{key}": value for key, value in asdict(clip).items()}
    given.update(target_options(options))
    given.update({f"TeacherInput.{key}": value for key, value in (teacher_input or {}).items()})
    recorded = {f"ClipSpec.{key}": value for key, value in settings["clip"].items()}
    recorded.update({name: settings.get(name) for name in target_options(options)})
    recorded.update({f"TeacherInput.{key}": value for key, value in settings["teacher_input"].items()})
    refuse_differences("teacher features", recorded, given, _PRECOMPUTE_AGAIN)


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
