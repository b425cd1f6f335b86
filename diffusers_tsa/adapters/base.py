"""The model-adapter interface: everything the training loop and the evaluation need to know about one video family.

A family is two classes in one module (or one folder) of this package, registered with `register_adapter`:

- a `ModelSpec`: the checkpoint as read from its configs, with no weight loaded. It knows the family's shape rules
  and refuses what the model cannot take, loads the stock pipeline with trained weights (and writes that code for the
  model card), and generates with it;
- a `ModelAdapter`: the training components (VAE, text encoder, scheduler, the trainable transformer), how a clip
  becomes latents and a caption conditioning, one training forward, and how trained weights are saved.

The training script and `eval/generate.py` only ever talk to these two interfaces.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from einops import rearrange
from torch import nn

from ..compat import dtype_argument
from ..errors import ModelLayoutError
from ..hooks import BlockFeatureExtractor, unwrap_model
from .flow_matching import FlowMatching


Grid = tuple[int, int, int]

#: The LoRA file a training run writes (diffusers' `load_lora_weights` default).
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def py_literal(value: Any) -> str:
    """`value` as Python source, strings in double quotes."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def scaled_moments(posterior, shift: torch.Tensor | float = 0.0, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """A VAE posterior over `z` (diffusers' `latent_dist`, with `mean` and `logvar` `(B, C, F, H, W)`) as the
    posterior over the family's latents `(z - shift) * scale`, `(B, 2C, F, H, W)`: mean and log-variance stacked on
    the channels. `shift` and `scale` are numbers or per-channel tensors `(C,)`. Sampling it (`sample_latents`)
    gives the family's latents with the same distribution as scaling a VAE sample."""
    mean, logvar = posterior.mean, posterior.logvar
    shift, scale = (
        rearrange(torch.as_tensor(v, dtype=mean.dtype, device=mean.device).reshape(-1), "c -> 1 c 1 1 1")
        for v in (shift, scale)
    )
    return torch.cat([(mean - shift) * scale, logvar + 2 * torch.log(scale.abs())], dim=1)


@dataclass(frozen=True)
class TrainingOptions:
    """A family's training choices beyond the loop's (`ModelSpec.check_options` refuses those it has not).

    Args:
        max_sequence_length (`int`, *optional*): text tokens per prompt; `None` is the family's pipeline default.
        flow_matching (`FlowMatching`): how flow-matching families (Wan, LTX-Video) draw and weight noise levels.
        expert (`str`, *optional*): the expert that trains in a two-expert checkpoint (Wan 2.2 A14B).
    """

    max_sequence_length: int | None = None
    flow_matching: FlowMatching = FlowMatching()
    expert: str | None = None


@dataclass(frozen=True)
class GenerationSettings:
    """How validation and evaluation videos are generated.

    Args:
        num_frames (`int`): frames per video.
        height (`int`): height in pixels.
        width (`int`): width in pixels.
        num_inference_steps (`int`, defaults to 50): denoising steps.
        guidance_scale (`float`, defaults to 6.0): classifier-free guidance.
        use_dynamic_cfg (`bool`, *optional*): CogVideoX's cosine dynamic guidance; `None` is the family's sampling
            default (on for CogVideoX, as the paper and VideoREPA sample).
        max_sequence_length (`int`, *optional*): text tokens; `None` is the model's own (226 for CogVideoX).
    """

    num_frames: int
    height: int
    width: int
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    use_dynamic_cfg: bool | None = None
    max_sequence_length: int | None = None


@dataclass(frozen=True)
class ModelSpec(abc.ABC):
    """A checkpoint of one model family, as read from its configs without loading any weight.

    Attributes:
        pretrained_model_name_or_path (`str`): the base pipeline (Hub id or folder).
        num_blocks (`int`): blocks that an alignment `depth` counts.
        hidden_size (`int`): width of the hooked block's hidden states (the projector's input).
        min_depth (`int`): the shallowest block whose output carries spatio-temporal video tokens.
        revision (`str`, *optional*): Hub revision of the checkpoint.
        cache_dir (`str`, *optional*): Hub cache folder.
    """

    #: The adapter family (`"cogvideox"`, `"nova"`), the training script's `--model_family`.
    family: ClassVar[str]
    #: `_class_name` of this family's `model_index.json`.
    pipeline_class_name: ClassVar[str]
    #: The transformer's class (in diffusers, for the families whose `transformer_class` does not override it).
    transformer_class_name: ClassVar[str] = ""
    #: Samplers `use_sampler` can put in a pipeline; the first is the family's evaluation protocol, `"pipeline"`
    #: keeps the checkpoint's own scheduler.
    samplers: ClassVar[tuple[str, ...]] = ("pipeline",)
    #: The model card's code (`usage_code`): the modules it imports the pipeline and `export_to_video` from and the
    #: dtype it generates in on a GPU; `usage_fps` is the family's frame rate, of the card's, validation and
    #: evaluation videos alike.
    usage_imports: ClassVar[tuple[str, str]] = ("diffusers", "diffusers.utils")
    usage_dtype: ClassVar[str] = "bfloat16"
    usage_fps: ClassVar[int] = 8

    pretrained_model_name_or_path: str
    num_blocks: int
    hidden_size: int
    min_depth: int
    revision: str | None = None
    cache_dir: str | None = None

    @classmethod
    @abc.abstractmethod
    def from_configs(
        cls,
        pretrained_model_name_or_path: str,
        model_index: dict,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
    ) -> ModelSpec:
        """Reads the model's configs (no weights); `model_index` is its `model_index.json`, already read."""

    @staticmethod
    def transformer_fields(name: str, config: dict, *, revision: str | None, cache_dir: str | None) -> dict[str, Any]:
        """The fields every spec reads the same way from a diffusers transformer config (`num_layers` blocks,
        `num_attention_heads * attention_head_dim` wide, each block alignable), for `from_configs`."""
        return {
            "pretrained_model_name_or_path": name,
            "num_blocks": config["num_layers"],
            "hidden_size": config["num_attention_heads"] * config["attention_head_dim"],
            "min_depth": 1,
            "revision": revision,
            "cache_dir": cache_dir,
        }

    # --- Shape rules and checks ---------------------------------------------------------------------------

    @abc.abstractmethod
    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        """The (F, H, W) grid of the hooked block's video tokens for clips of this size."""

    @abc.abstractmethod
    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        """Raises `GridError`, naming the sizes that work, for a clip size the model cannot take."""

    @property
    def default_depth(self) -> int:
        """The block aligned by default: the paper's share of the blocks (18 of CogVideoX-2B's 30, its best in the
        depth ablation), within [min_depth, num_blocks]. Families may state another with their reason."""
        return min(max(round(0.6 * self.num_blocks), self.min_depth), self.num_blocks)

    def check_depth(self, depth: int) -> None:
        """Raises `ModelLayoutError` for an alignment `depth` outside [min_depth, num_blocks]."""
        if not self.min_depth <= depth <= self.num_blocks:
            raise ModelLayoutError(
                f"`depth={depth}` is out of range for this {self.family} model: it must be in "
                f"[{self.min_depth}, {self.num_blocks}] (depth d aligns the output of the d-th block; the paper "
                "uses 18 for CogVideoX-2B)."
            )

    #: Whether the family trains with `FlowMatching` (its options are refused otherwise).
    uses_flow_matching: ClassVar[bool] = False

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """Raises `ModelLayoutError` for an option the family does not support: here, flow-matching options for a
        family that does not train with flow matching, and an expert for a single-transformer checkpoint."""
        if not self.uses_flow_matching and training.flow_matching != FlowMatching():
            raise ModelLayoutError(
                f"{self.family} does not train with flow matching: drop the `flow_matching` options."
            )
        if training.expert is not None:
            raise ModelLayoutError(
                f"`expert={training.expert!r}`: this {self.family} checkpoint has one transformer; experts are for "
                "two-expert checkpoints (Wan 2.2 A14B)."
            )

    def for_training(self, options: TrainingOptions) -> ModelSpec:
        """The spec as a run with `options` trains it (checked by `check_options`): here `self`; a family whose saved
        files or loading code depend on an option (Wan 2.2 A14B's expert) returns a copy that knows it."""
        return self

    def saved_files(self, training_mode: str) -> tuple[str, ...]:
        """The files a training run writes for `training_mode` (`"lora"` or `"full"`), and each checkpoint holds."""
        return (LORA_WEIGHT_NAME,) if training_mode == "lora" else ("transformer/config.json",)

    # --- Stock pipeline ----------------------------------------------------------------------------------------

    @property
    def pipeline_class(self) -> type:
        """The stock pipeline class that loads this checkpoint and what training writes (diffusers'
        `pipeline_class_name`; families outside diffusers override it)."""
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    @property
    def transformer_class(self) -> type:
        """The transformer class (`from_pretrained` of a full fine-tune): diffusers' `transformer_class_name`."""
        import diffusers

        return getattr(diffusers, self.transformer_class_name)

    def load_trained_pipeline(
        self,
        *,
        lora: str | os.PathLike | None = None,
        transformer: str | os.PathLike | None = None,
        transformer_subfolder: str | None = "transformer",
        lora_weight_name: str | None = None,
        lora_scale: float = 1.0,
        variant: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = "cpu",
    ) -> Any:
        """The stock pipeline of this checkpoint, as a user loads a training run's output.

        Args:
            lora (`str` or `os.PathLike`, *optional*): a LoRA (training output folder or Hub id) to load on the base.
            transformer (`str` or `os.PathLike`, *optional*): a fine-tuned transformer replacing the base one.
            transformer_subfolder (`str`, *optional*, defaults to `"transformer"`): where `transformer` holds it
                (the training script's layout); `None` for a bare transformer folder.
            lora_weight_name (`str`, *optional*): the LoRA file, when the folder holds several.
            lora_scale (`float`, defaults to 1.0): strength of the LoRA.
            variant (`str`, *optional*): weights variant of the base model, e.g. `"fp16"`.
            dtype (`torch.dtype`, defaults to `torch.float32`): weights dtype.
            device (`torch.device` or `str`, *optional*): where the pipeline goes; `None` leaves it on the CPU
                (for `enable_model_cpu_offload`).
        """
        if lora is not None and transformer is not None:
            raise ModelLayoutError("Pass `lora` or `transformer`, not both: a LoRA goes on the base transformer.")
        kwargs = {"revision": self.revision, "variant": variant, "cache_dir": self.cache_dir, dtype_argument(): dtype}
        if transformer is not None:
            kwargs["transformer"] = self.transformer_class.from_pretrained(
                transformer, subfolder=transformer_subfolder, cache_dir=self.cache_dir, **{dtype_argument(): dtype}
            )
        pipe = self.pipeline_class.from_pretrained(self.pretrained_model_name_or_path, **kwargs)
        if lora is not None:
            self._load_lora(pipe, lora, weight_name=lora_weight_name, scale=lora_scale)
        return pipe if device is None else pipe.to(device)

    def _load_lora(self, pipe, lora: str | os.PathLike, *, weight_name: str | None, scale: float) -> None:
        """Loads a LoRA with diffusers' `load_lora_weights`: rank and alpha come from the file's metadata."""
        pipe.load_lora_weights(lora, weight_name=weight_name)
        if scale != 1.0:
            pipe.set_adapters(pipe.get_active_adapters(), [scale])

    def usage_code(self, weights: str, training_mode: str, prompt: str, settings: GenerationSettings) -> str:
        """The model card's "Use it": Python code that loads a training run's output into the stock pipeline as
        `load_trained_pipeline` does, on a GPU if there is one, and generates `prompt` with the validation settings.

        Args:
            weights (`str`): the run's `output_dir`, or the Hub repository it was pushed to.
            training_mode (`str`): `"lora"` or `"full"`.
            prompt (`str`): the prompt of the example.
            settings (`GenerationSettings`): how the validation videos were generated.
        """
        pipeline_module, export_module = self.usage_imports
        pipeline, dtype = self.pipeline_class_name, dtype_argument()
        base = py_literal(self.pretrained_model_name_or_path)
        imports = [(pipeline_module, pipeline)]
        if training_mode == "lora":
            lora_imports, load_lora = self._usage_lora(weights)
            imports += lora_imports
            load = [f"pipe = {pipeline}.from_pretrained({base}, {dtype}=dtype)", load_lora]
        else:
            module, transformer = self._usage_transformer()
            imports.append((module, transformer))
            slot = self._usage_slot()
            load = [
                f"transformer = {transformer}.from_pretrained({py_literal(weights)}, "
                f"subfolder={py_literal(slot)}, {dtype}=dtype)",
                f"pipe = {pipeline}.from_pretrained({base}, {slot}=transformer, {dtype}=dtype)",
            ]
        imports.append((export_module, "export_to_video"))
        names = {}
        for module, name in imports:
            names.setdefault(module, []).append(name)
        kwargs = self.pipeline_kwargs(settings)
        arguments = [py_literal(prompt), *(f"{key}={py_literal(value)}" for key, value in kwargs.items())]
        half = f"torch.{self.usage_dtype}"
        return "\n".join(
            [
                "import torch",
                *(f"from {module} import {', '.join(found)}" for module, found in names.items()),
                "",
                f'device, dtype = ("cuda", {half}) if torch.cuda.is_available() else ("cpu", torch.float32)',
                *load,
                "pipe = pipe.to(device)",
                "video = pipe(",
                *(f"    {argument}," for argument in arguments),
                ").frames[0]",
                f'export_to_video(video, "output.mp4", fps={self.usage_fps})',
            ]
        )

    def _usage_lora(self, weights: str) -> tuple[list[tuple[str, str]], str]:
        """`usage_code`'s imports (module, name) and line that load the LoRA in `weights` on `pipe`: diffusers'
        `load_lora_weights`, the file named (a Hub repository read offline from the cache needs it)."""
        return [], f"pipe.load_lora_weights({py_literal(weights)}, weight_name={py_literal(LORA_WEIGHT_NAME)})"

    def _usage_slot(self) -> str:
        """The pipeline component, and the training output's subfolder, of the trained transformer."""
        return "transformer"

    def _usage_transformer(self) -> tuple[str, str]:
        """The module `usage_code` imports `transformer_class` from, and its name."""
        return "diffusers", self.transformer_class.__name__

    def sampler(self, name: str | None = None) -> str:
        """The sampler `name` checked against `samplers`; `None` is the family's protocol (the first)."""
        if name is None:
            return self.samplers[0]
        if name not in self.samplers:
            raise ModelLayoutError(
                f"`scheduler={name!r}` is not a {self.family} sampler; choose one of {self.samplers}."
            )
        return name

    def use_sampler(self, pipe, name: str | None = None) -> str:
        """Puts the sampler `name` (see `sampler`) in `pipe` and returns its name; `"pipeline"` changes nothing."""
        return self.sampler(name)

    @abc.abstractmethod
    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """The keyword arguments of this family's pipeline call for `settings`."""

    def generate(
        self, pipe, prompt: str, settings: GenerationSettings, generator: torch.Generator | None = None
    ) -> np.ndarray:
        """One video of `prompt`: float32 frames `(T, H, W, 3)` in [0, 1], what `export_to_video` takes."""
        return pipe(prompt=prompt, generator=generator, output_type="np", **self.pipeline_kwargs(settings)).frames[0]


class ModelAdapter(abc.ABC):
    """One model family's training components behind the interface the training loop uses.

    Subclasses load the frozen components (VAE, text encoder, scheduler) and the trainable transformer, and define
    how a clip becomes latents, a prompt becomes conditioning, and one training forward becomes diffusion loss
    terms. `transformer` is the module that is trained (LoRA or full) and hooked for alignment features.

    Args:
        spec (`ModelSpec`): the checkpoint, as read from its configs.
        tokenizer, text_encoder, vae, transformer, scheduler: the pipeline's components.
    """

    #: The family's `ModelSpec` subclass.
    spec_class: ClassVar[type[ModelSpec]]
    #: Module names LoRA adapts (PEFT `target_modules`): the attention projections, as diffusers' LoRA loaders and
    #: training examples adapt them.
    lora_target_modules: ClassVar[list[str]] = ["to_q", "to_k", "to_v", "to_out.0"]

    def __init__(
        self,
        spec: ModelSpec,
        *,
        tokenizer,
        text_encoder,
        vae,
        transformer: nn.Module,
        scheduler,
        options: TrainingOptions = TrainingOptions(),
        load_encoders: Callable[[], dict[str, Any]] | None = None,
    ):
        self.spec, self.options = spec, options
        self.tokenizer, self.text_encoder, self.vae = tokenizer, text_encoder, vae
        self.transformer, self.scheduler = transformer, scheduler
        self._load_encoders = load_encoders
        self._vae_options = {"slicing": False, "tiling": False}
        #: What trains: `None` until chosen, then `"lora"` (`add_lora`) or `"full"` (`enable_full_training`); it says
        #: what `save_trained` writes and `load_trained` reads.
        self.training_mode: str | None = None

    @contextlib.contextmanager
    def encoders_loaded(self) -> Iterator[None]:
        """The tokenizer, text encoder and VAE for the time of the block: an adapter loaded without them
        (`encoders=False`, training on precomputed inputs) loads them on entry and frees them on exit, for a
        validation; otherwise nothing happens."""
        if self.vae is not None or self._load_encoders is None:
            yield
            return
        loaded = self._load_encoders()
        self.tokenizer, self.text_encoder, self.vae = loaded["tokenizer"], loaded["text_encoder"], loaded["vae"]
        self.configure_vae(**self._vae_options)
        try:
            yield
        finally:
            from diffusers.training_utils import free_memory

            self.tokenizer = self.text_encoder = self.vae = None
            del loaded
            free_memory()

    @classmethod
    @abc.abstractmethod
    def from_pretrained(
        cls,
        spec: ModelSpec,
        *,
        variant: str | None = None,
        weight_dtype: torch.dtype = torch.float32,
        transformer_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        options: TrainingOptions = TrainingOptions(),
        encoders: bool = True,
        transformer: bool = True,
    ) -> ModelAdapter:
        """Loads every component of `spec`'s checkpoint: frozen ones in `weight_dtype` on `device`, the transformer
        frozen as well, in `transformer_dtype` (default `weight_dtype`; float32 for a full fine-tune, read straight
        from the checkpoint's own precision), to train with `options` (checked by `spec.check_options`). With
        `encoders=False` (training on precomputed latents and prompt embeddings) the tokenizer, the text encoder and
        the VAE are left out, until `encoders_loaded` needs them; with `transformer=False` (precomputing them) the
        transformer is, where the family's encoders do not need it. The caller then chooses what trains
        (`add_lora`, `enable_full_training`)."""

    @staticmethod
    def load_components(
        spec: ModelSpec,
        *,
        text_encoder_class: type,
        vae_class: type,
        scheduler: Any,
        transformer_subfolder: str = "transformer",
        variant: str | None = None,
        weight_dtype: torch.dtype = torch.float32,
        transformer_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        encoders: bool = True,
        transformer: bool = True,
    ) -> dict[str, Any]:
        """A diffusers checkpoint's components for `__init__`, each read once and frozen: the tokenizer, the text
        encoder and the VAE in `weight_dtype` (`ModelAdapter.load_encoders`; with `encoders=False`, `None` and a
        `load_encoders` that reads them later), the transformer of `transformer_subfolder` in `transformer_dtype`
        (default `weight_dtype`; `None` with `transformer=False`, to precompute inputs), all on `device`.
        `scheduler` is a scheduler class (read from the checkpoint's `scheduler/`) or an instance."""
        name, dtype = spec.pretrained_model_name_or_path, dtype_argument()
        kwargs = {"revision": spec.revision, "cache_dir": spec.cache_dir}
        load_encoders = functools.partial(
            ModelAdapter.load_encoders,
            spec,
            text_encoder_class=text_encoder_class,
            vae_class=vae_class,
            variant=variant,
            weight_dtype=weight_dtype,
            device=device,
        )
        if transformer:
            transformer = (
                spec.transformer_class.from_pretrained(
                    name,
                    subfolder=transformer_subfolder,
                    variant=variant,
                    **{dtype: transformer_dtype or weight_dtype},
                    **kwargs,
                )
                .requires_grad_(False)
                .to(device)
            )
        components = load_encoders() if encoders else {"tokenizer": None, "text_encoder": None, "vae": None}
        return {
            **components,
            "transformer": transformer or None,
            "scheduler": scheduler.from_pretrained(name, subfolder="scheduler", **kwargs)
            if isinstance(scheduler, type)
            else scheduler,
            "load_encoders": None if encoders else load_encoders,
        }

    @staticmethod
    def load_encoders(
        spec: ModelSpec,
        *,
        text_encoder_class: type,
        vae_class: type,
        variant: str | None = None,
        weight_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> dict[str, Any]:
        """A diffusers checkpoint's `tokenizer`, `text_encoder` and `vae`, frozen, in `weight_dtype` on `device`."""
        from transformers import AutoTokenizer

        name, dtype = spec.pretrained_model_name_or_path, dtype_argument()
        kwargs = {"revision": spec.revision, "cache_dir": spec.cache_dir}
        weights = {"variant": variant, **kwargs}
        text_encoder = text_encoder_class.from_pretrained(
            name, subfolder="text_encoder", dtype=weight_dtype, **weights
        )
        vae = vae_class.from_pretrained(name, subfolder="vae", **{dtype: weight_dtype}, **weights)
        return {
            "tokenizer": AutoTokenizer.from_pretrained(name, subfolder="tokenizer", **kwargs),
            "text_encoder": text_encoder.requires_grad_(False).to(device),
            "vae": vae.requires_grad_(False).to(device),
        }

    # --- Data -> model inputs ---------------------------------------------------------------------------------
    #
    # Each input has two stages: what the frozen encoders compute (`latent_moments`, `text_encoder_outputs`), which
    # `python -m diffusers_tsa.features` can compute once and store, and the cheap step from it to the transformer's
    # input that runs at every step (`sample_latents`, a fresh draw each time; `conditioning`).

    @abc.abstractmethod
    def latent_normalization(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """`(shift, scale)`, numbers or per-channel `(C',)` tensors: the family's latents are `(z - shift) * scale` for
        a VAE sample `z`."""

    @torch.no_grad()
    def latent_moments(self, videos: torch.Tensor) -> torch.Tensor:
        """Clips `(B, T, C, H, W)` in [-1, 1] -> the VAE posterior in the family's latent space, `(B, 2C', F, H', W')`:
        its mean and log-variance stacked on the channels (`scaled_moments`), in the VAE's dtype."""
        pixels = rearrange(videos, "b t c h w -> b c t h w").to(self.vae.device, self.vae.dtype)
        return scaled_moments(self.vae.encode(pixels).latent_dist, *self.latent_normalization())

    def sample_latents(self, moments: torch.Tensor) -> torch.Tensor:
        """`latent_moments` -> one latent sample `mean + exp(logvar / 2) * eps`, `(B, C', F, H', W')`, in the layout
        `diffusion_loss` takes (families override the layout), in the moments' dtype and on their device."""
        mean, logvar = moments.chunk(2, dim=1)
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)

    def encode_videos(self, videos: torch.Tensor) -> torch.Tensor:
        """Clips `(B, T, C, H, W)` in [-1, 1] -> latents in the layout `diffusion_loss` takes."""
        return self.sample_latents(self.latent_moments(videos))

    @abc.abstractmethod
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> what the frozen text encoder gives for them, one `(B, ...)` tensor per name (e.g.
        `prompt_embeds` `(B, L, D)`, `prompt_attention_mask` `(B, L)`)."""

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> Any:
        """`text_encoder_outputs` -> the text conditioning `diffusion_loss` takes: here `prompt_embeds`; families
        whose conditioning is a tuple, or uses trained weights (NOVA's null rows), override it."""
        return outputs["prompt_embeds"]

    def encode_prompts(self, prompts: list[str]) -> Any:
        """Captions -> the text conditioning `diffusion_loss` takes (a tensor, or a tuple of tensors such as
        embeddings and their attention mask; the loop never looks inside)."""
        return self.conditioning(self.text_encoder_outputs(prompts))

    # --- Training forward -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def diffusion_loss(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        conditioning: Any,
        *,
        timesteps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One training forward of `transformer` (possibly wrapped); returns the model's loss terms, whose sum is
        its diffusion loss (one term for CogVideoX, NOVA's `loss_t2i` and `loss_i2i`).

        `timesteps` `(B,)` in [0, num_train_timesteps) fixes each sample's noise level instead of drawing it (to
        look at the hooked features at a chosen noise level: `python -m diffusers_tsa.visualize`); `None` draws it
        as training does. Flow-matching families use `sigma = timesteps / num_train_timesteps`."""

    def feature_extractor(self, transformer: nn.Module, depth: int) -> BlockFeatureExtractor:
        """Hooks the block whose output `alignment_tokens` turns into video tokens."""
        self.spec.check_depth(depth)
        return BlockFeatureExtractor(transformer, depth=depth)

    def alignment_tokens(self, hidden_states: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The hooked block's output -> `(B, F*H*W, D)` video tokens in frame-major order."""
        return hidden_states

    # --- What trains and what is saved ------------------------------------------------------------------------

    def add_lora(self, rank: int, alpha: float) -> None:
        """Trains a LoRA adapter (PEFT) of rank `rank` and scale `alpha / rank` on `lora_target_modules` of the
        transformer: sets `training_mode` to `"lora"`."""
        from peft import LoraConfig

        self._choose_training_mode("lora")
        config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True, target_modules=self.lora_target_modules)
        self._inject_lora(config)

    def _inject_lora(self, config) -> None:
        """Adds the PEFT adapter `config` (a `LoraConfig`) to the transformer, as the `default` adapter."""
        self.transformer.add_adapter(config)

    def enable_full_training(self) -> None:
        """Makes the transformer's weights trainable for full fine-tuning: sets `training_mode` to `"full"` (families
        override this to keep the modules their own trainer freezes frozen)."""
        self._choose_training_mode("full")
        self.transformer.requires_grad_(True)

    def _choose_training_mode(self, mode: str) -> None:
        """Records `training_mode`; a run trains one way, chosen once."""
        if self.training_mode is not None:
            raise ModelLayoutError(
                f"This adapter already trains with `training_mode={self.training_mode!r}`; `{mode!r}` cannot be "
                "added: call `add_lora` or `enable_full_training` once, on a freshly loaded adapter."
            )
        self.training_mode = mode

    def save_trained(self, output_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Writes what trains in its stock format, by `training_mode`: the LoRA (`save_lora_weights`) or the full
        transformer (`save_transformer`), the files `spec.saved_files(training_mode)` names.

        Args:
            output_dir (`str` or `os.PathLike`): the training output or checkpoint folder.
            transformer (`nn.Module`): the trained transformer (possibly wrapped), `self.transformer` or its
                distributed wrapper.
        """
        if self._trained_mode("save_trained") == "lora":
            self.save_lora_weights(output_dir, transformer)
        else:
            self.save_transformer(output_dir, transformer)

    def load_trained(self, input_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Loads exactly what `save_trained` wrote in `input_dir` into `transformer` (resuming), by `training_mode`:
        the LoRA into its live adapter (`load_lora_weights`) or every weight (`load_transformer`).

        Args:
            input_dir (`str` or `os.PathLike`): a folder `save_trained` wrote (a checkpoint).
            transformer (`nn.Module`): the transformer being trained (possibly wrapped).
        """
        if self._trained_mode("load_trained") == "lora":
            self.load_lora_weights(input_dir, transformer)
        else:
            self.load_transformer(input_dir, transformer)

    def _trained_mode(self, caller: str) -> str:
        """`training_mode`, refusing an adapter with nothing chosen to train."""
        if self.training_mode is None:
            raise ModelLayoutError(
                f"`{caller}` needs to know what trains: call `add_lora(rank, alpha)` or `enable_full_training()` "
                "first."
            )
        return self.training_mode

    def enable_gradient_checkpointing(self) -> None:
        """Recomputes the transformer's activations in backward."""
        self.transformer.enable_gradient_checkpointing()

    def save_lora_weights(self, output_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Writes the LoRA weights where the spec's `load_trained_pipeline` reads them: here, the diffusers pipeline's
        own LoRA file (keys `transformer.*`, with the rank/alpha metadata `load_lora_weights` restores)."""
        from diffusers.training_utils import _collate_lora_metadata
        from peft.utils import get_peft_model_state_dict

        self.spec.pipeline_class.save_lora_weights(
            output_dir,
            transformer_lora_layers=get_peft_model_state_dict(transformer),
            **_collate_lora_metadata({"transformer": unwrap_model(transformer)}),
        )

    def load_lora_weights(self, input_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Loads what `save_lora_weights` wrote into the live adapter of `transformer` (resuming): exactly
        `input_dir/pytorch_lora_weights.safetensors`, never another file of the folder."""
        state_dict = self.spec.pipeline_class.lora_state_dict(input_dir, weight_name=LORA_WEIGHT_NAME)
        prefix = "transformer."
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        self._set_lora_state(transformer, state_dict, f"{input_dir}/{LORA_WEIGHT_NAME}")

    @staticmethod
    def _set_lora_state(transformer: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
        """Loads PEFT-keyed LoRA weights into the live `default` adapter, refusing a file that lacks any of its
        weights or holds others (a resumed run must continue from exactly what was saved)."""
        from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

        model = unwrap_model(transformer)
        expected = set(get_peft_model_state_dict(model))
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise ModelLayoutError(
                f"{source} does not hold this run's LoRA ({len(expected)} weights): {len(missing)} missing (e.g. "
                f"{missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}). Resume from a checkpoint of a "
                "run with the same model, rank and target modules."
            )
        set_peft_model_state_dict(model, state_dict, adapter_name="default")

    def save_transformer(self, output_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Writes the full transformer to `output_dir/transformer` (`from_pretrained(..., subfolder="transformer")`)."""
        transformer.save_pretrained(Path(output_dir) / "transformer")

    def load_transformer(self, input_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Loads what `save_transformer` wrote into `transformer` in place (resuming)."""
        saved = type(transformer).from_pretrained(input_dir, subfolder="transformer")
        transformer.load_state_dict(saved.state_dict())

    def configure_vae(self, *, slicing: bool = False, tiling: bool = False) -> None:
        """VAE slicing / tiling to save memory (the spec's `check_options` refuses them where unsupported), now or
        when `encoders_loaded` loads the VAE."""
        self._vae_options = {"slicing": slicing, "tiling": tiling}
        if self.vae is not None:
            if slicing:
                self.vae.enable_slicing()
            if tiling:
                self.vae.enable_tiling()

    # --- Validation -------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def pipeline(self, transformer: nn.Module) -> Any:
        """A stock pipeline around the live `transformer`, for validation videos (the caller switches the
        transformer to eval mode and back)."""
