"""The model card's "Use it" code: Python that loads a training run's output into the family's stock pipeline, as
`ModelSpec.load_trained_pipeline` does, and generates one video with the validation settings.

Everything family-specific comes from the spec's plain attributes: the pipeline (`pipeline_class_name`,
`usage_imports`, `usage_dtype`), how a LoRA loads (`usage_lora_loader`, `usage_lora_method`, `usage_lora_kwargs`),
the transformer's class and slot (`usage_transformer`, `trained_slot`), and the pipeline call (`usage_setup`,
`pipeline_kwargs`, `fps`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..adapters.options import GenerationSettings
from ..adapters.spec import LORA_WEIGHT_NAME, ModelSpec
from ..compat import dtype_argument


def py_literal(value: Any) -> str:
    """`value` as Python source, strings in double quotes."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def card_source(name_or_path: str) -> str:
    """`name_or_path` as the card's code names it: a local folder or file by its absolute path (the code then runs
    from any folder, not only the one training ran in), a Hub repository by its id."""
    return os.path.abspath(name_or_path) if os.path.exists(name_or_path) else name_or_path


def usage_code(spec: ModelSpec, weights: str, training_mode: str, prompt: str, settings: GenerationSettings) -> str:
    """The model card's "Use it": code that loads a training run's output into the stock pipeline, on a GPU if there
    is one, and generates `prompt` with the validation settings (from `load_image`'s first frame, in the stock
    image-to-video pipeline, for an image-to-video run). Where the spec does not know the trained
    transformer's slot (`trained_slot` is `None`), the code loads the output with `load_trained_pipeline`, which
    reads it from the saved files.

    Args:
        spec (`ModelSpec`): the base checkpoint, as the run trained it (`for_training`).
        weights (`str`): the run's `output_dir`, or the Hub repository it was pushed to. Local paths (`weights` and
            the base checkpoint's) are written absolute (`card_source`).
        training_mode (`str`): `"lora"` or `"full"`.
        prompt (`str`): the prompt of the example.
        settings (`GenerationSettings`): how the validation videos were generated.
    """
    half = f"torch.{spec.usage_dtype}"
    device = f'device, dtype = ("cuda", {half}) if torch.cuda.is_available() else ("cpu", torch.float32)'
    load_code = _load_stock if spec.trained_slot is not None else _load_through_spec
    imports, load = load_code(
        spec, card_source(spec.pretrained_model_name_or_path), card_source(weights), training_mode
    )
    names = {}
    for module, name in imports:
        names.setdefault(module, []).append(name)
    kwargs = spec.pipeline_kwargs(settings)
    arguments = [py_literal(prompt), *(f"{key}={py_literal(value)}" for key, value in kwargs.items())]
    image = []  # an image-to-video run animates a first frame
    if spec.image_to_video:
        names.setdefault(spec.usage_imports[1], []).append("load_image")
        image = ['image = load_image("first_frame.png")  # the first frame to animate']
        arguments.insert(1, "image=image")
    requirements = [f"# pip install {' '.join(spec.usage_requirements)}"] if spec.usage_requirements else []
    return "\n".join(
        [
            *requirements,
            "import torch",
            *(f"from {module} import {', '.join(found)}" for module, found in names.items()),
            "",
            device,
            *load,
            *spec.usage_setup(settings),
            *image,
            "video = pipe(",
            *(f"    {argument}," for argument in arguments),
            ").frames[0]",
            f'export_to_video(video, "output.mp4", fps={spec.fps})',
        ]
    )


def _load_stock(
    spec: ModelSpec, base: str, weights: str, training_mode: str
) -> tuple[list[tuple[str, str]], list[str]]:
    """The imports `(module, name)` and the lines that load `weights` into the stock pipeline of `base`: the base
    pipeline and the LoRA on it (its file named: a Hub repository read offline from the cache needs it), or the
    fine-tuned transformer in its slot."""
    pipeline = spec.image_to_video_pipeline_class_name if spec.image_to_video else spec.pipeline_class_name
    dtype = dtype_argument()
    base, slot = py_literal(base), spec.trained_slot
    pipeline_module, export_module = spec.usage_imports
    imports = [(pipeline_module, pipeline)]
    if training_mode == "lora":
        load = [f"pipe = {pipeline}.from_pretrained({base}, {dtype}=dtype)"]
        if spec.usage_lora_loader is not None:
            module, loader = spec.usage_lora_loader
            imports.append((module, loader))
            load.append(f"{loader}(pipe.transformer, {py_literal(weights)})")
        else:
            extra = {"weight_name": LORA_WEIGHT_NAME, **spec.usage_lora_kwargs}
            arguments = ", ".join([py_literal(weights), *(f"{key}={py_literal(v)}" for key, v in extra.items())])
            load.append(f"{spec.usage_lora_method}({arguments})")
    else:
        module, transformer = spec.usage_transformer
        imports.append((module, transformer))
        load = [
            f"transformer = {transformer}.from_pretrained({py_literal(weights)}, "
            f"subfolder={py_literal(slot)}, {dtype}=dtype)",
            f"pipe = {pipeline}.from_pretrained({base}, {slot}=transformer, {dtype}=dtype)",
        ]
    return [*imports, (export_module, "export_to_video")], [*load, "pipe = pipe.to(device)"]


def _load_through_spec(
    spec: ModelSpec, base: str, weights: str, training_mode: str
) -> tuple[list[tuple[str, str]], list[str]]:
    """The imports and lines that load `weights` with `load_spec(base).load_trained_pipeline`, which puts the trained
    transformer where the saved files say (a two-expert checkpoint's spec that does not know the expert)."""
    source = f"transformer={py_literal(weights)}"
    if training_mode == "lora":  # the file named, as the stock code does: a Hub repository read offline needs it
        source = f"lora={py_literal(weights)}, lora_weight_name={py_literal(LORA_WEIGHT_NAME)}"
    load = [
        f"pipe = load_spec({py_literal(base)}).load_trained_pipeline(",
        f"    {source}, dtype=dtype, device=device,",
        ")",
    ]
    return [(spec.usage_imports[1], "export_to_video"), ("diffusers_tsa.adapters", "load_spec")], load
