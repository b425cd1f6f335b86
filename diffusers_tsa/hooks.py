"""Capturing the hidden states of one block of any diffusers transformer with a forward hook."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .errors import ModelLayoutError


# Attribute names under which diffusers transformers keep their main list of blocks, most common first.
BLOCK_LIST_NAMES = ("transformer_blocks", "blocks", "layers")


@dataclass
class CapturedFeatures:
    """What one `BlockFeatureExtractor.capture()` context saw.

    Attributes:
        hidden_states (`torch.Tensor`, *optional*): `(B, N, D)` hidden states returned by the block, with their
            autograd graph; `None` until the block has run inside the context.
    """

    hidden_states: torch.Tensor | None = None


def unwrap_model(model: nn.Module) -> nn.Module:
    """Removes DDP/FSDP-style (`.module`), `torch.compile` (`._orig_mod`) and `PeftModel` wrappers."""
    while True:
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def find_block_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    """The model's block lists, by attribute name (`transformer_blocks`, `blocks`, ...), in priority order."""
    model = unwrap_model(model)
    return {
        name: getattr(model, name)
        for name in BLOCK_LIST_NAMES
        if isinstance(getattr(model, name, None), nn.ModuleList) and len(getattr(model, name)) > 0
    }


def _hidden_states_index(block: nn.Module) -> int | None:
    """Where the block's output tuple holds the hidden states, from diffusers' block registry if it knows it."""
    try:
        from diffusers.hooks._helpers import TransformerBlockRegistry

        return TransformerBlockRegistry.get(type(block)).return_hidden_states_index
    except (ImportError, ValueError):  # private API moved, or a block class it does not know: the first tensor
        return None


class BlockFeatureExtractor:
    """Captures the hidden states returned by one transformer block, for representation alignment.

    The block is chosen by `depth`, counted from 1 as in the paper and REPA (`depth=18` is the output of the 18th
    block, `transformer_blocks[17]`), or by a dotted `module_path` relative to the unwrapped model
    (`"transformer_blocks.17"`). Wrappers (PEFT, DDP/FSDP, accelerate, `torch.compile`) are seen through.
    Features are recorded only inside `capture()`, so a recomputation by gradient checkpointing during backward
    records nothing; the captured tensor keeps its autograd graph, so a loss on it trains the block and every
    block before it (LoRA weights included). `remove()` (or leaving the `with` block) detaches the hook and
    leaves the model exactly as it was.

    Args:
        model (`torch.nn.Module`): a diffusers transformer, possibly wrapped.
        depth (`int`, *optional*): 1-based index into the model's main block list.
        module_path (`str`, *optional*): dotted path of the block; exactly one of `depth` and `module_path`.
        hidden_states_index (`int`, *optional*): position of the hidden states in a tuple output. `None` asks
            diffusers' block registry (index 1 for Flux-style blocks) and falls back to the first tensor.
        clone (`bool`, defaults to `False`): capture a copy of the hidden states, for blocks whose output a later
            module changes in place (NOVA's blocks add their residuals in place).

    Example:

    ```py
    extractor = BlockFeatureExtractor(transformer, depth=18)
    with extractor.capture() as captured:
        model_output = transformer(hidden_states=noisy_latents, encoder_hidden_states=prompt_embeds, timestep=t)
    features = captured.hidden_states  # (B, N, D)
    extractor.remove()
    ```
    """

    def __init__(
        self,
        model: nn.Module,
        depth: int | None = None,
        *,
        module_path: str | None = None,
        hidden_states_index: int | None = None,
        clone: bool = False,
    ):
        if (depth is None) == (module_path is None):
            raise ValueError("Pass exactly one of `depth` (1-based block index) and `module_path`.")
        base = unwrap_model(model)
        self.block, self.module_path = _resolve_block(base, depth, module_path)
        self.hidden_states_index = (
            hidden_states_index if hidden_states_index is not None else _hidden_states_index(self.block)
        )
        self.clone = clone
        self._active: CapturedFeatures | None = None
        self._handle = self.block.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args, output) -> None:
        if self._active is None:
            return
        if isinstance(output, torch.Tensor):
            hidden = output
        elif self.hidden_states_index is not None:
            hidden = output[self.hidden_states_index]
        else:
            hidden = next(o for o in output if isinstance(o, torch.Tensor))
        # Overwrite: a block called again replaces what it returned.
        self._active.hidden_states = hidden.clone() if self.clone else hidden

    @contextlib.contextmanager
    def capture(self) -> Iterator[CapturedFeatures]:
        """Records the block's hidden states for the forward passes run inside the `with` block."""
        captured = self.start()
        try:
            yield captured
        finally:
            self.stop()

    def start(self) -> CapturedFeatures:
        """Starts recording, for hooks that cannot hold a `with` block (a forward pre-hook); `stop` ends it."""
        if self._handle is None:
            raise RuntimeError("This BlockFeatureExtractor was removed; create a new one.")
        self._active = CapturedFeatures()
        return self._active

    def stop(self) -> None:
        """Ends the recording `start` began."""
        self._active = None

    def remove(self) -> None:
        """Detaches the hook. The model and its `state_dict()` are left untouched."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._active = None

    def __enter__(self) -> "BlockFeatureExtractor":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _resolve_block(model: nn.Module, depth: int | None, module_path: str | None) -> tuple[nn.Module, str]:
    if module_path is not None:
        try:
            return model.get_submodule(module_path), module_path
        except AttributeError:
            lists = find_block_lists(model)
            found = ", ".join(f"{name} ({len(blocks)} blocks)" for name, blocks in lists.items()) or "none"
            raise ModelLayoutError(
                f"{type(model).__name__} has no module at `module_path={module_path!r}`; block lists found: {found}."
            ) from None
    lists = find_block_lists(model)
    if not lists:
        children = ", ".join(name for name, _ in model.named_children()) or "none"
        raise ModelLayoutError(
            f"Cannot find the blocks of {type(model).__name__}: none of {BLOCK_LIST_NAMES} is a non-empty "
            f"ModuleList (its children: {children}). Pass `module_path` to name the block."
        )
    name, blocks = next(iter(lists.items()))
    if not 1 <= depth <= len(blocks):
        raise ModelLayoutError(
            f"`depth={depth}` is out of range: {type(model).__name__}.{name} has {len(blocks)} blocks, so depth "
            f"must be in [1, {len(blocks)}] (depth d is the output of `{name}[d - 1]`)."
        )
    return blocks[depth - 1], f"{name}.{depth - 1}"
