"""The registry of model families: `register_adapter` adds one, `load_spec` finds a checkpoint's."""

from __future__ import annotations

import os

from ..errors import ModelLayoutError
from ..paths import check_local_path, refuse_unreachable_hub
from .adapter import ModelAdapter
from .spec import ModelSpec


#: Family name (`ModelSpec.family`, the training script's `--model_family`) -> adapter class.
ADAPTERS: dict[str, type[ModelAdapter]] = {}


def register_adapter(adapter_class: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator adding a family's adapter (and, through `adapter_class.spec_class`, its spec) to `ADAPTERS`."""
    ADAPTERS[adapter_class.spec_class.family] = adapter_class
    return adapter_class


def load_spec(
    pretrained_model_name_or_path: str | os.PathLike,
    *,
    family: str = "auto",
    revision: str | None = None,
    cache_dir: str | None = None,
) -> ModelSpec:
    """Reads a pipeline checkpoint's configs (no weights) into its family's `ModelSpec`.

    Args:
        pretrained_model_name_or_path (`str` or `os.PathLike`): Hub id or folder of a diffusers pipeline.
        family (`str`, defaults to `"auto"`): a key of `ADAPTERS`, or `"auto"` to read it from the pipeline class
            in `model_index.json` (a family's `pipeline_class_name`, one of its `detected_pipeline_class_names`, or an
            image-to-video class: `ModelSpec.image_to_video_class_names`).
        revision (`str`, *optional*): Hub revision.
        cache_dir (`str`, *optional*): Hub cache folder.
    """
    from diffusers import DiffusionPipeline

    check_local_path(pretrained_model_name_or_path, "pretrained_model_name_or_path")
    name = os.fspath(pretrained_model_name_or_path)
    try:
        model_index = DiffusionPipeline.load_config(name, revision=revision, cache_dir=cache_dir)
    except OSError as err:  # not a pipeline folder, nor a Hub repository that can be reached
        refuse_unreachable_hub(err, name, "pretrained_model_name_or_path")
        reason = " ".join(str(err).split())
        raise ModelLayoutError(
            f"`pretrained_model_name_or_path={name!r}` has no readable `model_index.json`: {reason}"
        ) from None
    if family == "auto":
        class_name = model_index.get("_class_name")
        found = [
            a
            for a in ADAPTERS.values()
            if class_name
            in (
                a.spec_class.pipeline_class_name,
                *a.spec_class.detected_pipeline_class_names,
                *a.spec_class.image_to_video_class_names(),
            )
        ]
        if not found:
            raise ModelLayoutError(
                f"Cannot tell the model family of `pretrained_model_name_or_path={name!r}` (pipeline class "
                f"{class_name!r}); pass `family`, one of {sorted(ADAPTERS)}."
            )
        family = found[0].spec_class.family
    if family not in ADAPTERS:
        raise ModelLayoutError(f"`family={family!r}` is not a known model family; choose one of {sorted(ADAPTERS)}.")
    return ADAPTERS[family].spec_class.from_configs(name, model_index, revision=revision, cache_dir=cache_dir)
