"""`ModelAdapter`: one model family's training components behind the interface the training loop uses.

An adapter holds the frozen components (VAE, text encoder, scheduler) and the trainable transformer of a checkpoint
(its `ModelSpec`, made `for_training`), and says how a clip becomes latents and a caption conditioning, what one
training forward computes, what trains (`training_mode`) and how it is saved. The training script and the
precompute talk only to this interface.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch
from einops import rearrange
from torch import nn

from ..compat import dtype_argument
from ..data.truncation import TruncatedCaptions
from ..errors import ModelLayoutError
from ..hooks import BlockFeatureExtractor, unwrap_model
from .options import TrainingOptions
from .spec import LORA_WEIGHT_NAME, ModelSpec


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
class ComponentClasses:
    """What a diffusers checkpoint's frozen components are read with (`ModelAdapter.component_classes`).

    Args:
        text_encoder (`type`): the text encoder's class (in `transformers`), read from `text_encoder/`.
        vae (`type`): the VAE's class, read from `vae/`.
        scheduler (`type` or scheduler): a scheduler class, read from the checkpoint's `scheduler/`, or an instance.
    """

    text_encoder: type
    vae: type
    scheduler: Any


class ModelAdapter(abc.ABC):
    """One model family's training components behind the interface the training loop uses.

    Subclasses load the frozen components (VAE, text encoder, scheduler) and the trainable transformer, and define
    how a clip becomes latents, a prompt becomes conditioning, and one training forward becomes diffusion loss
    terms. `transformer` is the module that is trained (LoRA or full) and hooked for alignment features.

    Args:
        spec (`ModelSpec`): the checkpoint, as read from its configs; the adapter holds it made `for_training` with
            `options`.
        tokenizer, text_encoder, vae, transformer, scheduler: the pipeline's components.
        options (`TrainingOptions`, defaults to `TrainingOptions()`): how the run trains; `self.options` holds them
            with the family's defaults filled in (`spec.for_training`).
        load_encoders (`Callable`, *optional*): loads the tokenizer, text encoder and VAE left out
            (`encoders_loaded`).
        **image_encoders: the family's `image_encoder_components` (`None` or absent: left out).
    """

    #: The family's `ModelSpec` subclass.
    spec_class: ClassVar[type[ModelSpec]]
    #: Module names LoRA adapts (PEFT `target_modules`): the attention projections, as diffusers' LoRA loaders and
    #: training examples adapt them.
    lora_target_modules: ClassVar[list[str]] = ["to_q", "to_k", "to_v", "to_out.0"]
    #: The frozen encoders `load_encoders` reads and `encoders_loaded` loads and frees, as attributes of the adapter
    #: (families with a second text encoder add theirs).
    encoder_components: ClassVar[tuple[str, ...]] = ("tokenizer", "text_encoder", "vae")
    #: The family's frozen image encoders of an image-to-video run (e.g. `("image_encoder", "image_processor")`),
    #: attributes of the adapter that `load_encoders` reads and `encoders_loaded` loads and frees with the others.
    image_encoder_components: ClassVar[tuple[str, ...]] = ()

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
        **image_encoders: Any,
    ):
        unknown = sorted(set(image_encoders) - set(self.image_encoder_components))
        if unknown:
            raise TypeError(f"{type(self).__name__} takes no components {unknown}.")
        for name in self.image_encoder_components:
            setattr(self, name, image_encoders.get(name))
        self.spec = spec.for_training(options)
        self.options = self.spec.options
        self.tokenizer, self.text_encoder, self.vae = tokenizer, text_encoder, vae
        self.transformer, self.scheduler = transformer, scheduler
        self._load_encoders = load_encoders
        self._vae_options = {"slicing": False, "tiling": False}
        #: What trains: `None` until chosen, then `"lora"` (`add_lora`) or `"full"` (`enable_full_training`); it says
        #: what `save_trained` writes and `load_trained` reads.
        self.training_mode: str | None = None
        #: The captions `text_encoder_outputs` truncated to the text length, for the end-of-run log.
        self.truncated_captions = TruncatedCaptions()

    @contextlib.contextmanager
    def encoders_loaded(self) -> Iterator[None]:
        """The tokenizer, text encoder and VAE (and the family's other encoders `load_encoders` reads, e.g. LTX-2's
        text connectors) for the time of the block: an adapter loaded without them (`encoders=False`, training on
        precomputed inputs) loads them on entry and frees them on exit, for a validation; otherwise nothing
        happens."""
        if self.vae is not None or self._load_encoders is None:
            yield
            return
        loaded = self._load_encoders()
        for name, component in loaded.items():
            setattr(self, name, component)
        self.configure_vae(**self._vae_options)
        try:
            yield
        finally:
            from diffusers.training_utils import free_memory

            for name in loaded:
                setattr(self, name, None)
            del loaded
            free_memory()

    @classmethod
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
        """Loads every component of `spec`'s checkpoint, to train with `options` (`spec.for_training` checks them
        and fills in the family's defaults). The caller then chooses what trains (`add_lora`,
        `enable_full_training`).

        Args:
            spec (`ModelSpec`): the checkpoint, as read from its configs (`load_spec`).
            variant (`str`, *optional*): weights variant, e.g. `"fp16"`.
            weight_dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the frozen components.
            transformer_dtype (`torch.dtype`, *optional*): dtype of the transformer (frozen as well until
                `add_lora` or `enable_full_training`); `None` is `weight_dtype`. A full fine-tune passes float32,
                read straight from the checkpoint's own precision.
            device (`torch.device` or `str`, defaults to `"cpu"`): where every component goes.
            options (`TrainingOptions`, defaults to `TrainingOptions()`): the family's training options.
            encoders (`bool`, defaults to `True`): `False` (training on precomputed latents and prompt embeddings)
                leaves the tokenizer, the text encoder and the VAE out, until `encoders_loaded` needs them.
            transformer (`bool`, defaults to `True`): `False` (precomputing them) leaves the transformer out, where
                the family's encoders do not need it.
        """
        spec = spec.for_training(options)
        components = cls.load_components(
            spec,
            variant=variant,
            weight_dtype=weight_dtype,
            transformer_dtype=transformer_dtype,
            device=device,
            encoders=encoders,
            transformer=transformer,
        )
        return cls(spec, **components, options=options)

    @classmethod
    def pipeline_components(cls, pipe) -> dict[str, Any]:
        """A loaded stock pipeline's components as `__init__` takes them: `tokenizer`, `text_encoder`, `vae`,
        `transformer` and `scheduler` (families with more text encoders hold them together and override it)."""
        names = ("tokenizer", "text_encoder", "vae", "transformer", "scheduler", *cls.image_encoder_components)
        return {name: getattr(pipe, name, None) for name in names}

    @classmethod
    def component_classes(cls, spec: ModelSpec) -> ComponentClasses:
        """The classes `load_components` reads a diffusers checkpoint's text encoder, VAE and scheduler with, for
        `spec` (made `for_training`). Every family that loads with `load_components` names its own."""
        raise NotImplementedError(
            f"{cls.__name__} names no `component_classes` and does not override `load_components`."
        )

    @classmethod
    def load_components(
        cls,
        spec: ModelSpec,
        *,
        variant: str | None = None,
        weight_dtype: torch.dtype = torch.float32,
        transformer_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        encoders: bool = True,
        transformer: bool = True,
    ) -> dict[str, Any]:
        """A diffusers checkpoint's components for `__init__`, each read once and frozen: the tokenizer, the text
        encoder and the VAE in `weight_dtype` (`load_encoders`; with `encoders=False`, `None` and a `load_encoders`
        that reads them later), the transformer of `spec.trained_slot` in `transformer_dtype` (default
        `weight_dtype`; `None` with `transformer=False`, to precompute inputs), all on `device`, and the scheduler
        (`component_classes`). See `from_pretrained` for the arguments."""
        name, dtype = spec.pretrained_model_name_or_path, dtype_argument()
        kwargs = {"revision": spec.revision, "cache_dir": spec.cache_dir}
        load_encoders = functools.partial(
            cls.load_encoders, spec, variant=variant, weight_dtype=weight_dtype, device=device
        )
        if transformer:
            transformer = (
                spec.transformer_class.from_pretrained(
                    name,
                    subfolder=spec.trained_slot,
                    variant=variant,
                    **{dtype: transformer_dtype or weight_dtype},
                    **kwargs,
                )
                .requires_grad_(False)
                .to(device)
            )
        components = (
            load_encoders() if encoders else dict.fromkeys(cls.encoder_components + cls.image_encoder_components)
        )
        scheduler = cls.component_classes(spec).scheduler
        return {
            **components,
            "transformer": transformer or None,
            "scheduler": scheduler.from_pretrained(name, subfolder="scheduler", **kwargs)
            if isinstance(scheduler, type)
            else scheduler,
            "load_encoders": None if encoders else load_encoders,
        }

    @classmethod
    def load_encoders(
        cls,
        spec: ModelSpec,
        *,
        variant: str | None = None,
        weight_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> dict[str, Any]:
        """A diffusers checkpoint's `tokenizer`, `text_encoder` and `vae` (of `component_classes`), frozen, in
        `weight_dtype` on `device`."""
        from transformers import AutoTokenizer

        classes = cls.component_classes(spec)
        name, dtype = spec.pretrained_model_name_or_path, dtype_argument()
        kwargs = {"revision": spec.revision, "cache_dir": spec.cache_dir}
        weights = {"variant": variant, **kwargs}
        text_encoder = classes.text_encoder.from_pretrained(
            name, subfolder="text_encoder", dtype=weight_dtype, **weights
        )
        vae = classes.vae.from_pretrained(name, subfolder="vae", **{dtype: weight_dtype}, **weights)
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
        # Drawn contiguously, whatever the moments' memory layout (NOVA's VAE gives channels-last ones): the noise
        # of a sample is then the same from a video as from its precomputed moments, for the same seed.
        noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)
        return mean + torch.exp(0.5 * logvar) * noise

    def encode_videos(self, videos: torch.Tensor) -> torch.Tensor:
        """Clips `(B, T, C, H, W)` in [-1, 1] -> latents in the layout `diffusion_loss` takes."""
        return self.sample_latents(self.latent_moments(videos))

    def channels_first(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents in the layout `diffusion_loss` takes -> `(B, C', F, H', W')` (the VAE's layout): unchanged here."""
        return latents

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, *, decoder: nn.Module | None = None) -> torch.Tensor:
        """The inverse of `encode_videos`: latents in the layout `diffusion_loss` takes -> clips `(B, T, C, H, W)` in
        [-1, 1], as the family's pipeline decodes them (its normalisation undone, then the VAE's decoder).

        Args:
            latents (`torch.Tensor`): the family's latents, e.g. `(B, F, C', H', W')` for CogVideoX.
            decoder (`torch.nn.Module`, *optional*): a lighter decoder of the same VAE latents `z` (any module whose
                `decode(z)` returns an object with `.sample`, or a tensor, `(B, C, T, H, W)`); default: `self.vae`.
        """
        decoder = decoder if decoder is not None else self.vae
        latents = self.channels_first(latents)
        shift, scale = (
            rearrange(torch.as_tensor(v, dtype=torch.float32, device=latents.device).reshape(-1), "c -> 1 c 1 1 1")
            for v in self.latent_normalization()
        )
        z = latents.float() / scale + shift
        parameter = next(decoder.parameters(), None)
        if parameter is not None:
            z = z.to(parameter.device, parameter.dtype)
        decoded = decoder.decode(z)
        pixels = decoded if isinstance(decoded, torch.Tensor) else decoded.sample
        return rearrange(pixels, "b c t h w -> b t c h w").clamp(-1.0, 1.0)

    def tokenize(self, prompts: list[str], max_length: int, **kwargs) -> Any:
        """`prompts` tokenized as the family's pipeline does, padded and truncated to `max_length` (`**kwargs` go
        to the tokenizer); the captions that did not fit are counted in `truncated_captions`."""
        add_special_tokens = kwargs.get("add_special_tokens", True)
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=add_special_tokens).input_ids]
        self.truncated_captions.add(prompts, lengths, max_length)
        return self.tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt", **kwargs
        )

    @abc.abstractmethod
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> what the frozen text encoder gives for them, one `(B, ...)` tensor per name (e.g.
        `prompt_embeds` `(B, L, D)`, `prompt_attention_mask` `(B, L)`)."""

    def image_encoder_outputs(
        self, first_frames: torch.Tensor, videos: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """An image-to-video run's first frames `(B, C, H, W)` in [-1, 1] (and their clips `(B, T, C, H, W)`, for
        families that encode a condition video) -> what the frozen encoders give for them, one `(B, ...)` tensor per
        name, stored by the precompute beside `text_encoder_outputs` (e.g. CogVideoX-I2V's `image_latent_moments`).
        Here none: families whose condition is the clip's own first latent frame need nothing more."""
        return {}

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> Any:
        """`text_encoder_outputs` (and, in an image-to-video run, `image_encoder_outputs`, in the same dict) -> the
        conditioning `diffusion_loss` takes: here `prompt_embeds`; families whose conditioning is a tuple, uses the
        transformer's own tensors (NOVA's null rows), or an image (sampled here, a fresh draw each step) override
        it."""
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
        """Writes the full transformer to `output_dir/<spec.trained_slot>` (`transformer/`, or Wan 2.2 A14B's
        `transformer_2/` for its low-noise expert), as `from_pretrained(..., subfolder=...)` reads it."""
        transformer.save_pretrained(Path(output_dir) / self.spec.trained_slot)

    def load_transformer(self, input_dir: str | os.PathLike, transformer: nn.Module) -> None:
        """Loads what `save_transformer` wrote into `transformer` in place (resuming)."""
        saved = type(transformer).from_pretrained(input_dir, subfolder=self.spec.trained_slot)
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
