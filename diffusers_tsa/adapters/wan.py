"""Wan 2.1 and 2.2 (diffusers' `WanPipeline`) behind the `ModelSpec` / `ModelAdapter` interface.

The training objective is flow matching as finetrainers trains Wan (`FlowMatching`): latents are the VAE's sample
normalised per channel with the VAE config's statistics, `(z - latents_mean) / latents_std`, in Wan's own layout
`(B, C, F, H, W)`; sigma is drawn per sample, `x_t = (1 - sigma) x_0 + sigma * noise`, the transformer sees
`t = 1000 sigma` and predicts `noise - x_0`. Prompts are UMT5 embeddings encoded as `WanPipeline` encodes them.

Three kinds of checkpoint share the pipeline:

- Wan 2.1 (1.3B, 14B): one transformer, VAE x8 in space and x4 in time, patch 1 x 2 x 2;
- Wan 2.2 TI2V-5B: one transformer, a residual VAE that patchifies its input (x16 in space, 48 channels) and
  per-token timesteps (`expand_timesteps`), all equal for text-to-video as the pipeline sets them;
- Wan 2.2 A14B: two experts, `transformer` for the noise levels at or above `boundary_ratio` and `transformer_2` for
  those below. A run trains one (`TrainingOptions.expert`), only on its own noise levels; the other is not loaded
  for training, and is read from the checkpoint for validation videos. Where the trained expert goes is recorded in
  what is saved: a full fine-tune of the low-noise expert in `transformer_2/`, a LoRA's expert in its file's header
  (`EXPERT_METADATA_KEY`), so that `load_trained_pipeline` (the training script's final videos, `eval/generate.py`)
  puts it in its slot with no flag.

Image-to-video (`TrainingOptions.image_to_video`), as `WanImageToVideoPipeline` conditions:

- Wan 2.1 I2V and Wan 2.2 I2V A14B (checkpoints of `WanImageToVideoPipeline`): the clip's first frame followed by
  zeros is encoded by the VAE (its mode, normalised as the latents), the 4-channel frame mask (`mask_lat_size`: 1 on
  the first latent frame) is put before it, and the two are concatenated to the noisy latents on the channels (in
  `prepare_latents`); Wan 2.1 I2V's transformer also takes `encoder_hidden_states_image`, the CLIP image encoder's
  penultimate hidden states (`encode_image`). Every sample is conditioned; all frames are generated and in the
  loss.
- Wan 2.2 TI2V-5B image mode (`expand_timesteps`): the first latent frame is the clean latent of the clip's own
  first frame (the VAE is causal), its tokens get timestep 0 and are left out of the diffusion loss; a share
  `first_frame_conditioning_p` of the samples (default `TI2V_FIRST_FRAME_CONDITIONING_P`) is conditioned, the others
  train text-to-video.

The alignment term sees every token, the first frame's included, as queries and keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from einops import rearrange, repeat
from torch import nn

from ..compat import dtype_argument
from ..errors import CheckpointError, GridError, ModelLayoutError
from ..hooks import unwrap_model
from .adapter import ComponentClasses, ModelAdapter
from .flow_matching import FlowMatching
from .options import GenerationSettings, TrainingOptions
from .registry import register_adapter
from .spec import LORA_WEIGHT_NAME, Grid, ModelSpec, frame_count_problem, side_problem


#: The experts of a two-expert checkpoint (Wan 2.2 A14B) -> the pipeline component each one is.
EXPERTS = {"high_noise": "transformer", "low_noise": "transformer_2"}
#: The share of Wan 2.2 TI2V-5B samples conditioned on their first frame when `--image_to_video` gives none. The
#: checkpoint is one model for both tasks (`WanPipeline` and `WanImageToVideoPipeline` load the same weights) and
#: Wan 2.2 trained it on both; half and half keeps the text-to-video task the run does not ask for from drifting while
#: giving the image task as many steps as a pure I2V run on 2 of every 4 clips. (finetrainers' 0.1 for LTX-Video is a
#: text-to-video run with some image conditioning, the reverse emphasis.)
TI2V_FIRST_FRAME_CONDITIONING_P = 0.5
#: Key of the safetensors header entry naming the expert a LoRA file trained (two-expert checkpoints only).
EXPERT_METADATA_KEY = "diffusers_tsa.wan_expert"


def lora_expert(path: str | os.PathLike) -> str | None:
    """The expert a LoRA file was trained for, from its header; `None` for a file without one (a one-transformer
    run, or a LoRA made elsewhere: diffusers loads those into `transformer`)."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        return (f.metadata() or {}).get(EXPERT_METADATA_KEY)


def frame_mask(batch: int, temporal_compression: int, latent_frames: int, height: int, width: int) -> torch.Tensor:
    """Wan I2V's frame mask (`WanImageToVideoPipeline.prepare_latents`' `mask_lat_size`), `(B, tc, F', H', W')`: the
    pixel frames' mask (1 for the given first frame, 0 for the generated ones), the first frame repeated `tc` times
    so that each latent frame holds `tc` of them, folded onto the channels: all ones on the first latent frame,
    zeros elsewhere."""
    mask = torch.zeros(batch, temporal_compression, latent_frames, height, width)
    mask[:, :, 0] = 1
    return mask


@dataclass(frozen=True)
class WanImageConditioning:
    """What Wan's image-to-video `diffusion_loss` takes (`WanAdapter.conditioning`).

    Args:
        prompt_embeds (`torch.Tensor`): UMT5 embeddings `(B, L, D)`.
        image_latents (`torch.Tensor`, *optional*): the normalised latent mode of `[first frame, zeros...]`,
            `(B, C', F', H', W')` (Wan 2.1 / 2.2 A14B I2V; `None` for TI2V-5B, conditioned on its own latents).
        image_embeds (`torch.Tensor`, *optional*): the image encoder's penultimate hidden states `(B, N, D')` (Wan 2.1
            I2V only).
    """

    prompt_embeds: torch.Tensor
    image_latents: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None


@dataclass(frozen=True)
class WanSpec(ModelSpec):
    """Wan's shape rules: a causal VAE (first frame alone, then `temporal_compression` frames per latent frame),
    `vae_scale` pixels per latent pixel, `patch_size` (frames, rows, columns) latents per token; and what the
    pipeline's config says: the experts' `boundary_ratio` (`None` for one transformer), `expand_timesteps` and the
    scheduler's class."""

    family = "wan"
    pipeline_class_name = "WanPipeline"
    image_to_video_pipeline_class_name: ClassVar[str | None] = "WanImageToVideoPipeline"
    #: TI2V-5B's share of samples conditioned on their first frame when the run gives none.
    default_first_frame_conditioning_p: ClassVar[float] = TI2V_FIRST_FRAME_CONDITIONING_P
    transformer_class_name = "WanTransformer3DModel"
    vae_class_name = "AutoencoderKLWan"
    uses_flow_matching = True
    #: `WanPipeline`'s default text length.
    default_max_sequence_length: ClassVar[int] = 512

    temporal_compression: int = 4
    vae_scale: int = 8
    patch_size: tuple[int, int, int] = (1, 2, 2)
    boundary_ratio: float | None = None
    expand_timesteps: bool = False
    scheduler_class_name: str = "UniPCMultistepScheduler"
    #: The tasks the checkpoint trains (`read_tasks`): subset of {"t2v", "i2v"}.
    tasks: frozenset[str] = frozenset({"t2v"})
    #: Whether the checkpoint has an image encoder (Wan 2.1 I2V's CLIP).
    has_image_encoder: bool = False

    @classmethod
    def from_model_configs(
        cls,
        pretrained_model_name_or_path,
        transformer_config,
        vae_config,
        model_index,
        *,
        revision=None,
        cache_dir=None,
    ) -> WanSpec:
        """The VAE's compression comes from its architecture (`dim_mult`, `temperal_downsample`, the 2.2 VAE's input
        `patch_size`), which holds for configs written before diffusers recorded `scale_factor_spatial`."""
        name, config, vae = pretrained_model_name_or_path, transformer_config, vae_config
        if vae is None:
            raise ModelLayoutError(
                "A Wan spec needs its VAE's config (`vae`): Wan 2.1's and 2.2's compress differently."
            )
        two_experts = (model_index.get("transformer_2") or [None])[0] is not None
        return cls(
            **cls.transformer_fields(name, config, revision=revision, cache_dir=cache_dir),
            temporal_compression=2 ** sum(vae["temperal_downsample"]),
            vae_scale=2 ** (len(vae["dim_mult"]) - 1) * (vae.get("patch_size") or 1),
            patch_size=tuple(config["patch_size"]),
            boundary_ratio=model_index.get("boundary_ratio") if two_experts else None,
            expand_timesteps=bool(model_index.get("expand_timesteps", False)),
            scheduler_class_name=model_index.get("scheduler", [None, cls.scheduler_class_name])[1],
            has_image_encoder=(model_index.get("image_encoder") or [None])[0] is not None,
        )

    @classmethod
    def read_tasks(cls, model_index: dict, transformer_config: dict) -> frozenset[str]:
        """`{"i2v"}` for a `WanImageToVideoPipeline` checkpoint, `{"t2v", "i2v"}` for Wan 2.2 TI2V-5B
        (`expand_timesteps`: one checkpoint for both), `{"t2v"}` otherwise."""
        if model_index.get("_class_name") == cls.image_to_video_pipeline_class_name:
            return frozenset({"i2v"})
        return frozenset({"t2v", "i2v"}) if model_index.get("expand_timesteps") else frozenset({"t2v"})

    @property
    def conditions_on_latents(self) -> bool:
        """Whether the image condition is the clip's own first latent frame (TI2V-5B, `expand_timesteps`) rather
        than a channel-concatenated condition video (Wan 2.1 / 2.2 A14B I2V)."""
        return self.expand_timesteps

    @property
    def fps(self) -> int:
        """The frame rate of the videos: 16 for Wan 2.1 and 2.2 A14B, 24 for Wan 2.2 TI2V-5B (`expand_timesteps`)."""
        return 24 if self.expand_timesteps else 16

    @property
    def two_experts(self) -> bool:
        """Whether the checkpoint has a high-noise and a low-noise expert (Wan 2.2 A14B)."""
        return self.boundary_ratio is not None

    @property
    def expert(self) -> str | None:
        """The expert a training run trains (`options.expert`, from `for_training`); `None` when unknown (a spec read
        for evaluation) or for a one-transformer checkpoint."""
        return self.options.expert if self.options is not None else None

    @property
    def trained_slot(self) -> str | None:
        """`transformer`, or for a two-expert checkpoint its trained expert's slot (`transformer_2` for the
        low-noise one), `None` when the expert is not known."""
        if not self.two_experts:
            return "transformer"
        return EXPERTS[self.expert] if self.expert else None

    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        latent_frames = (num_frames - 1) // self.temporal_compression + 1
        frames, rows, columns = self.patch_size
        return (latent_frames // frames, height // (self.vae_scale * rows), width // (self.vae_scale * columns))

    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        tc, (_, patch_h, patch_w) = self.temporal_compression, self.patch_size
        bad = [frame_count_problem(num_frames, tc)] if (num_frames - 1) % tc else []
        for name, value, patch in (("height", height, patch_h), ("width", width, patch_w)):
            bad += side_problem(name, value, self.vae_scale * patch, f"VAE x{self.vae_scale}, patch {patch}")
        if bad:
            raise GridError("Wan cannot take this clip size: " + "; ".join(bad) + ".")

    @property
    def default_depth(self) -> int:
        """The paper's share of the blocks, 0.6 (18 of CogVideoX-2B's 30, its best in the depth ablation): 18 of the
        30 blocks of Wan 2.1 1.3B and Wan 2.2 TI2V-5B, 24 of the 40 of the 14B models. Wan's blocks, like
        CogVideoX's, all see every video token with full 3D attention, so the same relative depth is where the
        correspondences the paper aligns form; no Wan depth ablation says otherwise."""
        return super().default_depth

    def first_frame_conditioning_p(self, options: TrainingOptions) -> float:
        """The share of samples conditioned on their first frame: 0 for text-to-video, 1 for the I2V checkpoints,
        `options.first_frame_conditioning_p` or `TI2V_FIRST_FRAME_CONDITIONING_P` for TI2V-5B."""
        if not options.image_to_video:
            return 0.0
        if not self.conditions_on_latents:
            return 1.0
        p = options.first_frame_conditioning_p
        return self.default_first_frame_conditioning_p if p is None else p

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """`WanPipeline` has no dynamic guidance; prompts need at least one token; a two-expert checkpoint trains
        exactly one of its experts, named by `expert`, and a one-transformer checkpoint none."""
        super().check_options(training=replace(training, expert=None) if self.two_experts else training)
        if use_dynamic_cfg:
            raise ModelLayoutError("`use_dynamic_cfg=True`: WanPipeline has no dynamic guidance; drop it.")
        if training.max_sequence_length is not None and training.max_sequence_length < 1:
            raise ModelLayoutError(
                f"`max_sequence_length={training.max_sequence_length}` must be positive (Wan's default is "
                f"{self.default_max_sequence_length})."
            )
        if self.two_experts and training.expert not in EXPERTS:
            choices = " or ".join(f"`expert={name!r}` ({slot})" for name, slot in EXPERTS.items())
            problem = "is not an expert of" if training.expert is not None else "names no expert of"
            raise ModelLayoutError(
                f"`expert={training.expert!r}` {problem} this two-expert Wan checkpoint (split at boundary_ratio "
                f"{self.boundary_ratio}); a run trains one of them: {choices}."
            )

    def load_trained_pipeline(
        self,
        *,
        lora=None,
        transformer=None,
        transformer_subfolder="transformer",
        lora_weight_name=None,
        lora_scale=1.0,
        variant=None,
        dtype=torch.float32,
        device="cpu",
    ) -> Any:
        """As the base, with the trained expert of a two-expert checkpoint in its slot: a full fine-tune saved in
        `transformer_2/` (the low-noise expert) becomes the pipeline's `transformer_2`; a LoRA goes where its file
        says (`_load_lora`)."""
        if lora is None and transformer is not None:
            transformer_subfolder = self._trained_subfolder(transformer, transformer_subfolder)
        if lora is not None or transformer is None or transformer_subfolder != EXPERTS["low_noise"]:
            return super().load_trained_pipeline(
                lora=lora,
                transformer=transformer,
                transformer_subfolder=transformer_subfolder,
                lora_weight_name=lora_weight_name,
                lora_scale=lora_scale,
                variant=variant,
                dtype=dtype,
                device=device,
            )
        expert = self.transformer_class.from_pretrained(
            transformer, subfolder=transformer_subfolder, cache_dir=self.cache_dir, **{dtype_argument(): dtype}
        )
        pipe = self.pipeline_class.from_pretrained(
            self.pretrained_model_name_or_path,
            transformer_2=expert,
            revision=self.revision,
            variant=variant,
            cache_dir=self.cache_dir,
            **{dtype_argument(): dtype},
        )
        return pipe if device is None else pipe.to(device)

    def _trained_subfolder(self, transformer: str | os.PathLike, subfolder: str | None) -> str | None:
        """`subfolder`, or `transformer_2` for a two-expert checkpoint's training output that holds only that one
        (a full fine-tune of the low-noise expert)."""
        if not self.two_experts or subfolder not in (None, "transformer"):
            return subfolder
        held = {name for name in EXPERTS.values() if self._holds_transformer(transformer, name)}
        return EXPERTS["low_noise"] if held == {EXPERTS["low_noise"]} else subfolder

    def _holds_transformer(self, folder: str | os.PathLike, subfolder: str) -> bool:
        """Whether `folder` (local or on the Hub) has a transformer config in `subfolder`."""
        try:
            self.transformer_class.load_config(folder, subfolder=subfolder, cache_dir=self.cache_dir)
        except OSError:
            return False
        return True

    def _load_lora(self, pipe, lora, *, weight_name, scale) -> None:
        """diffusers' `load_lora_weights`, into `transformer_2` for a LoRA of the low-noise expert."""
        low_noise = self.two_experts and lora_expert(self._lora_file(lora, weight_name)) == "low_noise"
        pipe.load_lora_weights(lora, weight_name=weight_name, load_into_transformer_2=low_noise)
        if scale != 1.0:
            pipe.set_adapters(pipe.get_active_adapters(), [scale])

    def _lora_file(self, lora: str | os.PathLike, weight_name: str | None) -> str:
        """The local path of the LoRA file `load_lora_weights` reads (downloaded from the Hub if needed)."""
        name = weight_name or LORA_WEIGHT_NAME
        if Path(lora).is_file():
            return os.fspath(lora)
        if Path(lora).is_dir():
            return os.fspath(Path(lora) / name)
        from huggingface_hub import hf_hub_download

        return hf_hub_download(os.fspath(lora), name, cache_dir=self.cache_dir)

    @property
    def usage_lora_kwargs(self) -> dict[str, Any]:
        """A low-noise expert's LoRA goes into `transformer_2` (`load_into_transformer_2=True`)."""
        return {"load_into_transformer_2": True} if self.expert == "low_noise" else {}

    @property
    def usage_requirements(self) -> tuple[str, ...]:
        """`ftfy` for an image-to-video run: `WanImageToVideoPipeline` cleans every prompt with it."""
        return ("ftfy",) if self.image_to_video else ()

    def generate(self, pipe, prompt: str, settings: GenerationSettings, generator=None, image: Any = None):
        """As the base; an image-to-video pipeline without `ftfy` installed is given the prompts as embeddings,
        encoded as `WanPipeline` encodes them (this diffusers' `WanImageToVideoPipeline` cleans prompts with `ftfy`
        unconditionally, `WanPipeline` only where it is installed)."""
        from diffusers import WanPipeline
        from diffusers.utils import is_ftfy_available

        if image is None or is_ftfy_available():
            return super().generate(pipe, prompt, settings, generator=generator, image=image)
        self.configure_pipeline(pipe, settings)
        kwargs = self.pipeline_kwargs(settings)
        length = kwargs.pop("max_sequence_length")

        def encode(text: str) -> torch.Tensor:
            return WanPipeline._get_t5_prompt_embeds(pipe, text, max_sequence_length=length)

        negative = {"negative_prompt_embeds": encode("")} if settings.guidance_scale > 1 else {}
        embeds = encode(prompt)
        return pipe(
            image=image, prompt_embeds=embeds, **negative, generator=generator, output_type="np", **kwargs
        ).frames[0]

    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """`WanPipeline` arguments (no dynamic guidance; text length the pipeline's 512 unless given)."""
        return {
            "num_frames": settings.num_frames,
            "height": settings.height,
            "width": settings.width,
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "max_sequence_length": self.resolve_max_sequence_length(settings.max_sequence_length),
        }


@register_adapter
class WanAdapter(ModelAdapter):
    """`WanPipeline` checkpoints (e.g. `Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, `Wan-AI/Wan2.2-TI2V-5B-Diffusers`,
    `Wan-AI/Wan2.2-T2V-A14B-Diffusers` with `options.expert`). `transformer` is the trained expert."""

    spec_class = WanSpec
    image_encoder_components: ClassVar[tuple[str, ...]] = ("image_encoder", "image_processor")

    @classmethod
    def component_classes(cls, spec: WanSpec) -> ComponentClasses:
        """UMT5, Wan's VAE, and the checkpoint's own scheduler (for validation videos); the transformer read is the
        trained expert's (`spec.trained_slot`)."""
        import diffusers
        from transformers import UMT5EncoderModel

        return ComponentClasses(
            text_encoder=UMT5EncoderModel,
            vae=diffusers.AutoencoderKLWan,
            scheduler=getattr(diffusers, spec.scheduler_class_name),
        )

    @classmethod
    def load_encoders(cls, spec: WanSpec, *, variant=None, weight_dtype=torch.float32, device="cpu") -> dict[str, Any]:
        """As the base, with Wan 2.1 I2V's `image_encoder` (`CLIPVisionModel`, frozen) and `image_processor` for an
        image-to-video run."""
        encoders = super().load_encoders(spec, variant=variant, weight_dtype=weight_dtype, device=device)
        if not (spec.has_image_encoder and spec.options is not None and spec.options.image_to_video):
            return encoders
        from transformers import CLIPImageProcessor, CLIPVisionModel

        name, kwargs = spec.pretrained_model_name_or_path, {"revision": spec.revision, "cache_dir": spec.cache_dir}
        encoder = CLIPVisionModel.from_pretrained(
            name, subfolder="image_encoder", dtype=weight_dtype, variant=variant, **kwargs
        )
        return {
            **encoders,
            "image_encoder": encoder.requires_grad_(False).eval().to(device),
            "image_processor": CLIPImageProcessor.from_pretrained(name, subfolder="image_processor", **kwargs),
        }

    @property
    def slot(self) -> str:
        """The pipeline component that trains: `transformer`, or `transformer_2` for the low-noise expert."""
        return self.spec.trained_slot

    @property
    def sigma_range(self) -> tuple[float, float]:
        """The noise levels the trained transformer denoises: all, or its expert's side of `boundary_ratio` (the
        pipeline gives t >= boundary to `transformer`)."""
        boundary = self.spec.boundary_ratio
        if self.options.expert is None:
            return (0.0, 1.0)
        return (boundary, 1.0) if self.options.expert == "high_noise" else (0.0, boundary)

    # --- Data -> model inputs ---------------------------------------------------------------------------------

    def latent_normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Wan's latents are the VAE sample normalised per channel: `(z - latents_mean) / latents_std`."""
        mean, std = (torch.tensor(self.vae.config[key]) for key in ("latents_mean", "latents_std"))
        return mean, 1 / std

    @torch.no_grad()
    # Adapted from diffusers' pipelines/wan/pipeline_wan.py (`WanPipeline._get_t5_prompt_embeds`).
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> `prompt_embeds`, UMT5 embeddings `(B, L, D)`, L = `options.max_sequence_length` (by default
        512), as `WanPipeline` encodes them: cleaned, padded to L, the encoder masked and the padding positions
        zeroed."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        tokens = self.tokenize(
            [prompt_clean(prompt) for prompt in prompts],
            self.options.max_sequence_length,
            add_special_tokens=True,
            return_attention_mask=True,
        )
        device = self.text_encoder.device
        mask = tokens.attention_mask.to(device)
        embeddings = self.text_encoder(tokens.input_ids.to(device), mask).last_hidden_state
        return {"prompt_embeds": embeddings * rearrange(mask, "b l -> b l 1").to(embeddings.dtype)}

    @torch.no_grad()
    # Adapted from diffusers' pipelines/wan/pipeline_wan_i2v.py (`prepare_latents`, `encode_image`).
    def image_encoder_outputs(
        self, first_frames: torch.Tensor, videos: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """First frames `(B, C, H, W)` in [-1, 1] (and their clips `(B, T, C, H, W)`, for the frame count) -> for Wan
        2.1 / 2.2 A14B I2V `image_latent_moments`, the VAE posterior of `[first frame, T - 1 zero frames]`
        `(B, 2C', F', H', W')` normalised as the latents, and with an image encoder (Wan 2.1 I2V) `image_embeds`,
        its penultimate hidden states `(B, N, D')` of the frames as 8-bit images (what the pipeline is given);
        nothing for TI2V-5B, whose condition is the clip's own first latent frame."""
        if not self.options.image_to_video or self.spec.conditions_on_latents:
            return {}
        if videos is None:
            raise ValueError("Wan I2V's condition video has the clip's frame count: pass `videos`.")
        condition = torch.zeros_like(videos)
        condition[:, 0] = first_frames
        outputs = {"image_latent_moments": self.latent_moments(condition)}
        if self.image_encoder is not None:
            pixels = ((first_frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            images = list(rearrange(pixels, "b c h w -> b h w c").cpu().numpy())
            inputs = self.image_processor(images=images, return_tensors="pt").to(self.image_encoder.device)
            hidden = self.image_encoder(**inputs, output_hidden_states=True).hidden_states[-2]
            outputs["image_embeds"] = hidden
        return outputs

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> Any:
        """The text and image outputs -> `prompt_embeds` for text-to-video, else a `WanImageConditioning`: the image
        latents are the posterior's mode (the pipeline encodes its condition with `sample_mode="argmax"`)."""
        if not self.options.image_to_video:
            return outputs["prompt_embeds"]
        moments = outputs.get("image_latent_moments")
        return WanImageConditioning(
            prompt_embeds=outputs["prompt_embeds"],
            image_latents=None if moments is None else moments.chunk(2, dim=1)[0],
            image_embeds=outputs.get("image_embeds"),
        )

    # --- Training forward -------------------------------------------------------------------------------------

    def diffusion_loss(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        conditioning: torch.Tensor,
        *,
        timesteps: torch.Tensor | None = None,
    ):
        """Flow matching on `latents` `(B, C, F, H, W)`, at noise levels drawn in `sigma_range`, or at
        `timesteps / num_train_timesteps` when `timesteps` `(B,)` are given."""
        flow: FlowMatching = self.options.flow_matching
        noise = torch.randn_like(latents)
        sigmas = flow.sigmas(
            latents.shape[0],
            latents.device,
            self.sigma_range,
            timesteps=timesteps,
            num_train_timesteps=self.scheduler.config.num_train_timesteps,
        )
        noisy, timestep = FlowMatching.noisy(latents, noise, sigmas), self._timesteps(sigmas, latents)
        if not isinstance(conditioning, WanImageConditioning):
            prediction = transformer(
                hidden_states=noisy, timestep=timestep, encoder_hidden_states=conditioning, return_dict=False
            )[0]
            return {"diffusion": flow.loss(prediction, latents, noise, sigmas)}
        if self.spec.conditions_on_latents:
            generated = self.generated_mask(latents)
            prediction = transformer(
                hidden_states=(1 - generated) * latents + generated * noisy,
                timestep=self.token_timesteps(generated, sigmas * self.scheduler.config.num_train_timesteps),
                encoder_hidden_states=conditioning.prompt_embeds,
                return_dict=False,
            )[0]
            return {"diffusion": flow.loss(prediction, latents, noise, sigmas, mask=generated)}
        batch, _, frames, height, width = latents.shape
        mask = frame_mask(batch, self.spec.temporal_compression, frames, height, width).to(latents)
        prediction = transformer(
            hidden_states=torch.cat([noisy, mask, conditioning.image_latents.to(latents)], dim=1),
            timestep=timestep,
            encoder_hidden_states=conditioning.prompt_embeds,
            encoder_hidden_states_image=conditioning.image_embeds,
            return_dict=False,
        )[0]
        return {"diffusion": flow.loss(prediction, latents, noise, sigmas)}

    def generated_mask(self, latents: torch.Tensor) -> torch.Tensor:
        """TI2V-5B: which latents are generated, `(B, 1, F', H', W')`: 0 on the first latent frame of the samples
        drawn to be conditioned (each with probability `first_frame_conditioning_p`), 1 elsewhere (the pipeline's
        `first_frame_mask`)."""
        batch, _, frames, height, width = latents.shape
        conditioned = torch.rand(batch, device=latents.device) < self.spec.first_frame_conditioning_p(self.options)
        mask = torch.ones(batch, 1, frames, height, width, device=latents.device, dtype=latents.dtype)
        mask[conditioned, :, 0] = 0
        return mask

    def token_timesteps(self, generated: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """TI2V-5B's per-token timesteps `(B, N)`: `timesteps` `(B,)` on generated tokens, 0 on the conditioning
        frame's, in the transformer's token order (frame, row, column; one mask value per patch)."""
        pt, ph, pw = self.spec.patch_size
        per_token = generated[:, 0, ::pt, ::ph, ::pw] * rearrange(timesteps, "b -> b 1 1 1")
        return rearrange(per_token, "b f h w -> b (f h w)")

    def _timesteps(self, sigmas: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """`t = sigma * num_train_timesteps`, `(B,)`; with `expand_timesteps` (TI2V-5B) one per token `(B, N)`, all
        equal, as the pipeline sets them for text-to-video."""
        timesteps = sigmas * self.scheduler.config.num_train_timesteps
        if not self.spec.expand_timesteps:
            return timesteps
        _, _, frames, height, width = latents.shape
        pt, ph, pw = self.spec.patch_size
        return repeat(timesteps, "b -> b n", n=(frames // pt) * (height // ph) * (width // pw))

    # --- What trains and what is saved ------------------------------------------------------------------------

    def save_lora_weights(self, output_dir, transformer: nn.Module) -> None:
        """diffusers' Wan LoRA file (keys `transformer.*`, rank/alpha metadata); a trained expert is named in its
        header, so that it loads with `load_into_transformer_2=True` when it is the low-noise one."""
        super().save_lora_weights(output_dir, transformer)
        if self.options.expert is not None:
            self._name_expert(Path(output_dir) / LORA_WEIGHT_NAME)

    def _name_expert(self, path: Path) -> None:
        """Adds `EXPERT_METADATA_KEY` to the header of the LoRA file `path` (diffusers ignores unknown entries)."""
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(os.fspath(path), framework="pt") as f:
            metadata, tensors = f.metadata() or {}, {key: f.get_tensor(key) for key in f.keys()}
        save_file(tensors, os.fspath(path), metadata={**metadata, EXPERT_METADATA_KEY: self.options.expert})

    def load_lora_weights(self, input_dir, transformer: nn.Module) -> None:
        """Reads exactly `input_dir/pytorch_lora_weights.safetensors`, refusing another expert's LoRA."""
        path = Path(input_dir) / LORA_WEIGHT_NAME
        if path.is_file() and lora_expert(path) != self.options.expert:
            raise CheckpointError(
                f"{path} is a LoRA of the {lora_expert(path) or 'only'} transformer, not of `expert="
                f"{self.options.expert!r}`: resume with the expert that run trained."
            )
        super().load_lora_weights(input_dir, transformer)

    def load_transformer(self, input_dir, transformer: nn.Module) -> None:
        """As the base, from the trained expert's folder (`slot`), refusing a checkpoint without it."""
        if not (Path(input_dir) / self.slot / "config.json").is_file():
            raise CheckpointError(
                f"{input_dir} has no `{self.slot}/` folder: it is not a full fine-tune of this run's transformer "
                f"(`expert={self.options.expert!r}`); resume from a checkpoint of a run with the same expert."
            )
        super().load_transformer(input_dir, transformer)

    # --- Validation -------------------------------------------------------------------------------------------

    def pipeline(self, transformer: nn.Module):
        """A `WanPipeline` around the live `transformer` in its slot; the other expert of a two-expert checkpoint is
        read from the checkpoint (in the frozen weights' dtype, on the live transformer's device) for this
        pipeline only."""
        image = {"image_encoder": self.image_encoder, "image_processor": self.image_processor}
        components = {
            **(image if self.spec.pipeline_class.__name__ == self.spec.image_to_video_pipeline_class_name else {}),
            "tokenizer": self.tokenizer,
            "text_encoder": self.text_encoder,
            "vae": self.vae,
            "scheduler": self.scheduler,
            "transformer": None,
            "transformer_2": None,
            "boundary_ratio": self.spec.boundary_ratio,
            "expand_timesteps": self.spec.expand_timesteps,
        }
        components[self.slot] = transformer
        if self.spec.two_experts:
            other = next(slot for slot in EXPERTS.values() if slot != self.slot)
            components[other] = self.spec.transformer_class.from_pretrained(
                self.spec.pretrained_model_name_or_path,
                subfolder=other,
                revision=self.spec.revision,
                cache_dir=self.spec.cache_dir,
                **{dtype_argument(): self.vae.dtype},
            ).to(unwrap_model(transformer).device)
        return self.spec.pipeline_class(**components)
