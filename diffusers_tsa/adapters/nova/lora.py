"""NOVA's LoRA file: diffusers' layout (`transformer.<module>.lora_A...` keys, the LoRA config as metadata), loaded
with `load_nova_lora` since `NOVAPipeline` has no `load_lora_weights`."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import UsageError
from ...hooks import unwrap_model
from ..spec import LORA_WEIGHT_NAME


# The safetensors metadata key under which diffusers stores LoRA configs (rank, alpha, target modules).
_METADATA_KEY = "lora_adapter_metadata"
_PREFIX = "transformer."


def save_nova_lora(transformer: nn.Module, output_dir: str | os.PathLike) -> None:
    """Writes the `default` PEFT adapter of `transformer` to `output_dir/pytorch_lora_weights.safetensors`."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    model = unwrap_model(transformer)
    config = model.peft_config["default"].to_dict()
    config = {key: sorted(value) if isinstance(value, set) else value for key, value in config.items()}
    metadata = {
        "format": "pt",
        _METADATA_KEY: json.dumps(
            {_PREFIX + key: value for key, value in config.items()}, indent=2, sort_keys=True, default=str
        ),
    }
    state_dict = get_peft_model_state_dict(model)
    os.makedirs(output_dir, exist_ok=True)
    save_file(
        {_PREFIX + k: v.contiguous() for k, v in state_dict.items()},
        str(Path(output_dir) / LORA_WEIGHT_NAME),
        metadata=metadata,
    )


def read_nova_lora(
    input_dir: str | os.PathLike, weight_name: str = LORA_WEIGHT_NAME
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The transformer's LoRA state dict (PEFT keys) and LoRA config in a folder or Hub repository."""
    from safetensors import safe_open

    path = Path(input_dir) / weight_name
    if not Path(input_dir).is_dir():  # a Hub repository
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(os.fspath(input_dir), weight_name))
    if not path.is_file():
        raise UsageError(f"`lora={os.fspath(input_dir)!r}` has no {weight_name}; pass the output_dir of a LoRA run.")
    with safe_open(str(path), framework="pt") as f:
        metadata = json.loads((f.metadata() or {}).get(_METADATA_KEY, "{}"))
        state_dict = {k[len(_PREFIX) :]: f.get_tensor(k) for k in f.keys() if k.startswith(_PREFIX)}
    config = {k[len(_PREFIX) :]: v for k, v in metadata.items() if k.startswith(_PREFIX)}
    return state_dict, config


def load_nova_lora(
    transformer: nn.Module, input_dir: str | os.PathLike, *, weight_name: str = LORA_WEIGHT_NAME, scale: float = 1.0
) -> nn.Module:
    """Adds the LoRA adapter trained by `train_text_to_video_tsa.py --model_family nova` to a NOVA transformer.

    Args:
        transformer (`NOVATransformer3DModel`): e.g. `NOVAPipeline.from_pretrained(base).transformer`.
        input_dir (`str` or `os.PathLike`): the training `output_dir`, or a Hub repository it was pushed to.
        weight_name (`str`, defaults to `"pytorch_lora_weights.safetensors"`): the LoRA file.
        scale (`float`, defaults to 1.0): strength of the LoRA.

    Returns:
        The same `transformer`, with the adapter (rank and alpha from the file's metadata) active.

    Example:

    ```py
    pipe = NOVAPipeline.from_pretrained("BAAI/nova-d48w1024-osp480", torch_dtype=torch.float16)
    load_nova_lora(pipe.transformer, "nova-tsa-lora")
    ```
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer
    from peft.utils import set_peft_model_state_dict

    state_dict, config = read_nova_lora(input_dir, weight_name)
    if not config:
        raise UsageError(
            f"`lora={os.fspath(input_dir)!r}`: its {weight_name} has no LoRA config metadata (rank, alpha)."
        )
    known = {field.name for field in dataclasses.fields(LoraConfig) if field.init}
    inject_adapter_in_model(LoraConfig(**{k: v for k, v in config.items() if k in known}), transformer)
    set_peft_model_state_dict(transformer, state_dict, adapter_name="default")
    for module in transformer.modules():
        if isinstance(module, LoraLayer):
            module.set_scale("default", scale)
    return transformer
