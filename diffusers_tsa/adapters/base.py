"""The model-adapter interface: everything the training loop needs to know about one video model family.

The loop only ever talks to a `ModelAdapter` (and, before any weight is loaded, to its `ModelSpec`), so adding a
family (CogVideoX, NOVA, later Wan or LTX) means adding one module here, never editing the loop.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ModelLayoutError
from ..hooks import BlockFeatureExtractor

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class ModelSpec(abc.ABC):
    """What the flag checks need to know about a model, read from its configs without loading any weight.

    Attributes:
        family (`str`): the adapter family (`"cogvideox"`, `"nova"`).
        num_blocks (`int`): blocks that `--alignment_depth` counts.
        hidden_size (`int`): width of the hooked block's hidden states (the projector's input).
        min_depth (`int`): the shallowest block whose output carries spatio-temporal video tokens.
    """

    family: str
    num_blocks: int
    hidden_size: int
    min_depth: int

    @abc.abstractmethod
    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        """The (F, H, W) grid of the hooked block's video tokens for clips of this size."""

    @abc.abstractmethod
    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        """Raises `GridError`, naming the flag and sizes that work, for a clip size the model cannot take."""

    def check_depth(self, depth: int) -> None:
        """Raises `ModelLayoutError` for an `--alignment_depth` outside [min_depth, num_blocks]."""
        if not self.min_depth <= depth <= self.num_blocks:
            raise ModelLayoutError(
                f"--alignment_depth={depth} is out of range for this {self.family} model: it must be in "
                f"[{self.min_depth}, {self.num_blocks}] (depth d aligns the output of the d-th block; the paper "
                "uses 18 for CogVideoX-2B)."
            )


class ModelAdapter(abc.ABC):
    """One model family behind the interface the training loop uses.

    Subclasses load the frozen components (VAE, text encoder, scheduler) and the trainable transformer, and define
    how a clip becomes latents, a prompt becomes conditioning, and one training forward becomes diffusion loss
    terms. `transformer` is the module that is trained (LoRA or full) and hooked for alignment features.
    """

    #: The stock diffusers pipeline class that loads what `save_lora_weights` / `save_transformer` write.
    pipeline_class: type
    #: Module names LoRA adapts (PEFT `target_modules`).
    lora_target_modules: ClassVar[list[str]]

    transformer: nn.Module

    # --- Before any weight is loaded -------------------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def load_spec(
        cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
        cache_dir: str | None = None,
    ) -> ModelSpec:
        """Reads the model's configs (no weights) into a `ModelSpec`."""

    @classmethod
    @abc.abstractmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
        variant: str | None = None, cache_dir: str | None = None, weight_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> "ModelAdapter":
        """Loads every component: frozen ones in `weight_dtype` on `device`, the transformer frozen as well
        (the caller then chooses what trains with `add_lora` or `requires_grad_`)."""

    # --- Data -> model inputs ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def encode_videos(self, videos: torch.Tensor) -> torch.Tensor:
        """Clips `(B, T, C, H, W)` in [-1, 1] -> scaled latents in the layout `diffusion_loss` takes."""

    @abc.abstractmethod
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Captions -> the text conditioning `diffusion_loss` takes."""

    # --- Training forward -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def diffusion_loss(
        self, transformer: nn.Module, latents: torch.Tensor, conditioning: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One training forward of `transformer` (possibly wrapped); returns the model's loss terms, whose sum is
        its diffusion loss (one term for CogVideoX, NOVA's `loss_t2i` and `loss_i2i`)."""

    def feature_extractor(self, transformer: nn.Module, depth: int) -> BlockFeatureExtractor:
        """Hooks the block whose output `alignment_tokens` turns into video tokens."""
        return BlockFeatureExtractor(transformer, depth=depth)

    def alignment_tokens(self, hidden_states: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The hooked block's output -> `(B, F*H*W, D)` video tokens in frame-major order."""
        return hidden_states

    # --- What trains and what is saved ------------------------------------------------------------------------

    def add_lora(self, rank: int, alpha: float) -> None:
        """Adds a trainable LoRA adapter (PEFT) on `lora_target_modules` of the transformer."""
        from peft import LoraConfig

        config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True, target_modules=self.lora_target_modules)
        self.transformer.add_adapter(config)

    def enable_full_training(self) -> None:
        """Makes the transformer's weights trainable for `--training_mode full` (families override this to keep the
        modules their own trainer freezes frozen)."""
        self.transformer.requires_grad_(True)

    def enable_gradient_checkpointing(self) -> None:
        """Recomputes the transformer's activations in backward (`--gradient_checkpointing`)."""
        self.transformer.enable_gradient_checkpointing()

    @abc.abstractmethod
    def save_lora_weights(self, output_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Writes the LoRA weights (with rank/alpha metadata) where `pipeline_class.load_lora_weights` reads them."""

    @abc.abstractmethod
    def load_lora_weights(self, input_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Loads what `save_lora_weights` wrote into the live adapter of `transformer` (resuming)."""

    def save_transformer(self, output_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Writes the full transformer to `output_dir/transformer` (`from_pretrained(..., subfolder="transformer")`)."""
        transformer.save_pretrained(Path(output_dir) / "transformer")

    def load_transformer(self, input_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Loads what `save_transformer` wrote into `transformer` in place (resuming)."""
        saved = type(transformer).from_pretrained(input_dir, subfolder="transformer")
        transformer.load_state_dict(saved.state_dict())

    def configure_vae(self, *, slicing: bool = False, tiling: bool = False) -> None:
        """VAE slicing / tiling to save memory (`--enable_slicing`, `--enable_tiling`)."""
        if slicing:
            self.vae.enable_slicing()
        if tiling:
            self.vae.enable_tiling()

    # --- Validation -------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def pipeline(self, transformer: nn.Module) -> Any:
        """A stock pipeline around the live `transformer`, for validation videos."""

    def load_trained_pipeline(
        self, pretrained_model_name_or_path: str | os.PathLike, output_dir: str | os.PathLike, training_mode: str,
        *, revision: str | None = None, variant: str | None = None, cache_dir: str | None = None,
        dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
    ) -> Any:
        """The stock `pipeline_class` loaded from the base model and what training wrote to `output_dir`, the way a
        user loads it: `load_lora_weights(output_dir)` for LoRA, `transformer/` for a full fine-tune."""
        kwargs = {"revision": revision, "variant": variant, "cache_dir": cache_dir, "torch_dtype": dtype}
        if training_mode == "lora":
            pipe = self.pipeline_class.from_pretrained(pretrained_model_name_or_path, **kwargs)
            pipe.load_lora_weights(output_dir)
        else:
            transformer = type(self.transformer).from_pretrained(output_dir, subfolder="transformer", torch_dtype=dtype)
            pipe = self.pipeline_class.from_pretrained(pretrained_model_name_or_path, transformer=transformer, **kwargs)
        return pipe.to(device)

    @abc.abstractmethod
    def generation_kwargs(self, num_frames: int, height: int, width: int) -> dict[str, Any]:
        """Keyword arguments that make `pipeline(...)` generate clips of the training size."""
