"""CogVideoX (1.0: 2B and 5B; 1.5: 5B; diffusers' `CogVideoXPipeline`), behind the `ModelSpec` / `ModelAdapter`
interface.

The training objective is that of diffusers' `examples/cogvideo/train_cogvideox_lora.py`: latents are the VAE's
sample times its scaling factor, `(B, F, C, H, W)`; t ~ U{0..999}; the transformer's v-prediction is mapped to x0
by `scheduler.get_velocity`; the target is the clean latent and each sample's MSE is weighted by
1 / (1 - alphas_cumprod[t]). The 5B model's 3D RoPE is built for the training size; the snr shift lives in the
scheduler's `alphas_cumprod`.

CogVideoX 1.5 (`patch_size_t = 2` in the transformer config) patches latent frames in pairs. For an odd number of
latent frames, `CogVideoXPipeline` samples `patch_size_t - F % patch_size_t` extra latent frames and drops the first
ones after denoising (`latents[:, additional_frames:]`): the padding comes before the video. Training uses that
layout, filled as CogVideo's own fine-tuning fills it (`finetune/models/cogvideox_t2v/lora_trainer.py`): copies of
latent frame 0 go first. The loss covers every frame the transformer sees, the padding copies included, as that
trainer and finetrainers compute it (the pipeline discards those frames, so they only add latent frame 0 once more).
The RoPE is the pipeline's 1.5 one (`grid_type="slice"`, positions counted in patches, `max_size` the config's
sample size); the text-to-video pipeline passes no `ofs`, so a transformer with `ofs_embed_dim` (image-to-video) is
refused. With 8k+1 frames (81 at 768x1360 by default) token frame 0 holds pixel frame 0 alone (the padding copy and
latent frame 0) and each later token frame 8 pixel frames: dropping token frame 0 (`drop_first_frame`) leaves the
frames a teacher sees, every frame after the first.

Image-to-video (`TrainingOptions.image_to_video`; CogVideoX-5b-I2V and CogVideoX1.5-5B-I2V,
`CogVideoXImageToVideoPipeline`), as that pipeline's `prepare_latents` and diffusers'
`examples/cogvideo/train_cogvideox_image_to_video_lora.py` condition: the clip's first frame, noised in pixel space
(sigma = exp(N(-3, 0.5)), the reference trainers' augmentation, drawn per clip), is encoded alone and sampled from its
posterior; its latent, scaled as the pipeline scales it (`1 / scaling_factor` for a VAE with `invert_scale_latents`,
CogVideoX 1.5's), fills latent frame 0 of a condition video whose other frames are zeros, concatenated to the noisy
latents on the channels. CogVideoX 1.5 also passes `ofs = 2.0`, and its condition starts at the padding frame, as the
pipeline's does. Every frame is denoised and in the loss, and the condition enters every token of latent frame 0
through the patch embedding: there is no conditioning token to leave out, so all video tokens are the alignment's
queries and keys. A cached run keeps the augmented draw of its precompute, one per clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import nn

from ..errors import GridError, ModelLayoutError
from .adapter import ComponentClasses, ModelAdapter, scaled_moments
from .options import GenerationSettings, TrainingOptions
from .registry import register_adapter
from .spec import Grid, ModelSpec


#: The `_class_name` of CogVideoX's image-to-video checkpoints (CogVideoX-5b-I2V, CogVideoX1.5-5B-I2V).
IMAGE_TO_VIDEO_PIPELINE = "CogVideoXImageToVideoPipeline"
#: The reference trainers' conditioning-noise augmentation: the first frame gets Gaussian pixel noise of standard
#: deviation exp(N(mean, std)) before it is encoded (diffusers' `train_cogvideox_image_to_video_lora.py`).
IMAGE_NOISE_LOG_SIGMA = (-3.0, 0.5)
#: The `ofs` CogVideoX1.5-5B-I2V's transformer is given (`CogVideoXImageToVideoPipeline`, CogVideo's I2V trainer).
OFS = 2.0


def check_transformer_config(name: str, config: dict, model_index: dict) -> None:
    """Refuses a CogVideoX transformer config that its pipeline cannot run: an image-to-video transformer
    (`ofs_embed_dim`, an `ofs` the text-to-video pipeline never passes) outside a `CogVideoXImageToVideoPipeline`
    checkpoint, or temporal patches without RoPE (the sincos table counts latent frames, not token frames)."""
    if config.get("ofs_embed_dim") and model_index.get("_class_name") != IMAGE_TO_VIDEO_PIPELINE:
        raise ModelLayoutError(
            f"`pretrained_model_name_or_path={name!r}` has an image-to-video transformer (`ofs_embed_dim="
            f"{config['ofs_embed_dim']}`) outside a `{IMAGE_TO_VIDEO_PIPELINE}` checkpoint, which alone runs it: "
            "use THUDM/CogVideoX1.5-5B-I2V (with --image_to_video) or the text-to-video THUDM/CogVideoX1.5-5B."
        )
    if config.get("patch_size_t") and not config.get("use_rotary_positional_embeddings"):
        raise ModelLayoutError(
            f"`pretrained_model_name_or_path={name!r}` has temporal patches (`patch_size_t="
            f"{config['patch_size_t']}`) without RoPE, which `CogVideoXPipeline` cannot run: CogVideoX 1.5 needs "
            "`use_rotary_positional_embeddings=True`."
        )


@dataclass(frozen=True)
class CogVideoXImageConditioning:
    """What CogVideoX's image-to-video `diffusion_loss` takes (`CogVideoXAdapter.conditioning`).

    Args:
        prompt_embeds (`torch.Tensor`): T5 embeddings `(B, L, D)`.
        image_latents (`torch.Tensor`): one latent sample of each augmented first frame, scaled as the pipeline scales
            it, `(B, 1, C', H', W')`.
    """

    prompt_embeds: torch.Tensor
    image_latents: torch.Tensor


@dataclass(frozen=True)
class CogVideoXSpec(ModelSpec):
    """CogVideoX's shape rules: a causal VAE (first frame alone, then `temporal_compression` frames per latent
    frame), `vae_scale` pixels per latent pixel, `patch_size` latent pixels per token, and prompts of
    `max_text_seq_length` T5 tokens. CogVideoX 1.5 also patches `patch_size_t` latent frames per token frame (1 for
    1.0), its latent frames padded at the start to a multiple of it, and its RoPE covers at most `max_height` x
    `max_width` pixels (its config's sample size; `None` for 1.0). A transformer with learned positional embeddings
    (CogVideoX-5b-I2V) takes only its sample size, `learned_size` (height, width); one with `ofs_embed_dim` is given
    `ofs` (`has_ofs`)."""

    family = "cogvideox"
    pipeline_class_name = "CogVideoXPipeline"
    image_to_video_pipeline_class_name = IMAGE_TO_VIDEO_PIPELINE
    transformer_class_name = "CogVideoXTransformer3DModel"
    vae_class_name = "AutoencoderKLCogVideoX"
    #: VideoREPA's sampling, which the paper follows: DPM-Solver with trailing timesteps; or DDIM, trailing too.
    samplers = ("dpm", "ddim", "pipeline")
    #: VideoREPA's `inference/generate.py` always enables both; tiling changes pixels at 480x720.
    protocol_vae_tiling = True

    temporal_compression: int = 4
    vae_scale: int = 8
    patch_size: int = 2
    max_text_seq_length: int = 226
    patch_size_t: int = 1
    max_height: int | None = None
    max_width: int | None = None
    learned_size: tuple[int, int] | None = None
    has_ofs: bool = False

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
    ) -> CogVideoXSpec:
        name, config, vae = pretrained_model_name_or_path, transformer_config, vae_config or {}
        check_transformer_config(name, config, model_index or {})
        patch_size_t = config.get("patch_size_t") or 1
        vae_scale = 2 ** (len(vae["block_out_channels"]) - 1) if "block_out_channels" in vae else cls.vae_scale
        max_height = max_width = None
        if patch_size_t > 1:  # 1.5's RoPE table (`grid_type="slice"`) ends at the config's sample size
            max_height, max_width = config["sample_height"] * vae_scale, config["sample_width"] * vae_scale
        learned_size = None
        if config.get("use_learned_positional_embeddings"):  # its patch embedding refuses any other size
            learned_size = (config["sample_height"] * vae_scale, config["sample_width"] * vae_scale)
        return cls(
            **cls.transformer_fields(name, config, revision=revision, cache_dir=cache_dir),
            temporal_compression=vae.get("temporal_compression_ratio", 4),
            vae_scale=vae_scale,
            patch_size=config["patch_size"],
            max_text_seq_length=config["max_text_seq_length"],
            patch_size_t=patch_size_t,
            max_height=max_height,
            max_width=max_width,
            learned_size=learned_size,
            has_ofs=bool(config.get("ofs_embed_dim")),
        )

    @property
    def fps(self) -> int:
        """The frame rate of the videos: 16 for CogVideoX 1.5 (its 81 frames are 5 s), 8 for 1.0."""
        return 16 if self.patch_size_t > 1 else 8

    @property
    def default_max_sequence_length(self) -> int:
        """CogVideoX's prompts have the length its text positions are built for: its config's `max_text_seq_length`."""
        return self.max_text_seq_length

    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        """Token frames are the latent frames, padded to a multiple of `patch_size_t`, over `patch_size_t`."""
        pixels = self.vae_scale * self.patch_size
        latent_frames = (num_frames - 1) // self.temporal_compression + 1
        return (-(-latent_frames // self.patch_size_t), height // pixels, width // pixels)

    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        """CogVideoX 1.0 takes 4k+1 frames; 1.5 takes 8k+1 frames (81 or 161 as it was trained: an odd number of
        latent frames, so that token frame 0 is pixel frame 0 alone, as the teacher pairing needs) of at most
        `max_height` x `max_width` pixels. Both take sides that are multiples of `vae_scale * patch_size` (16), and
        a transformer with learned positional embeddings only its `learned_size`."""
        pixels = self.vae_scale * self.patch_size
        step = self.temporal_compression * self.patch_size_t
        bad = []
        if (num_frames - 1) % step:
            k = (num_frames - 1) // step
            bad.append(
                f"`num_frames={num_frames}` must be {step}k+1 (e.g. {step * k + 1} or {step * (k + 1) + 1})"
                + self._frames_reason()
            )
        for name, value, limit in (("height", height, self.max_height), ("width", width, self.max_width)):
            if value % pixels or value < pixels:
                bad.append(
                    f"`{name}={value}` must be a multiple of {pixels} (VAE x{self.vae_scale}, patch {self.patch_size})"
                )
            if limit is not None and value > limit:
                bad.append(f"`{name}={value}` must be at most {limit} (the sample size of this transformer's RoPE)")
        if self.learned_size is not None and (height, width) != self.learned_size:
            bad.append(
                f"`height={height}` and `width={width}` must be {self.learned_size[0]} and {self.learned_size[1]} "
                "(its learned positional embeddings cover that size only)"
            )
        if bad:
            raise GridError(f"{self._version_name} cannot take this clip size: " + "; ".join(bad) + ".")

    @property
    def _version_name(self) -> str:
        """`"CogVideoX 1.5"` for a transformer with temporal patches, else `"CogVideoX"`."""
        return "CogVideoX 1.5" if self.patch_size_t > 1 else "CogVideoX"

    def _frames_reason(self) -> str:
        """Why CogVideoX 1.5 needs its frame count (empty for 1.0)."""
        if self.patch_size_t == 1:
            return ""
        return (
            f": {self.patch_size_t} latent frames of {self.temporal_compression} pixel frames make a token "
            "frame, and latent frame 0 (pixel frame 0 alone) gets its own, padded as the pipeline pads it"
        )

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """CogVideoX's text positions are fixed by its config (`max_text_seq_length`): prompts have that length."""
        super().check_options(training=training)
        if training.max_sequence_length not in (None, self.max_text_seq_length):
            raise ModelLayoutError(
                f"`max_sequence_length={training.max_sequence_length}`: CogVideoX's prompts have "
                f"{self.max_text_seq_length} tokens (its `max_text_seq_length`); drop it."
            )

    def use_sampler(self, pipe, name: str | None = None) -> str:
        """`"dpm"` (the default): `CogVideoXDPMScheduler` with `timestep_spacing="trailing"`, as VideoREPA's
        `inference/generate.py` samples for the paper's tables; `"ddim"`: `CogVideoXDDIMScheduler`, trailing too."""
        from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

        name = self.sampler(name)
        if name != "pipeline":
            scheduler_class = CogVideoXDPMScheduler if name == "dpm" else CogVideoXDDIMScheduler
            pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, timestep_spacing="trailing")
        return name

    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """`CogVideoXPipeline` arguments; dynamic CFG is on unless `settings` turns it off, as the paper samples."""
        return {
            "num_frames": settings.num_frames,
            "height": settings.height,
            "width": settings.width,
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "use_dynamic_cfg": True if settings.use_dynamic_cfg is None else settings.use_dynamic_cfg,
            "max_sequence_length": self.resolve_max_sequence_length(settings.max_sequence_length),
        }


@register_adapter
class CogVideoXAdapter(ModelAdapter):
    """`CogVideoXPipeline` checkpoints (e.g. `THUDM/CogVideoX-2b`, `THUDM/CogVideoX-5b`, `THUDM/CogVideoX1.5-5B`) and
    `CogVideoXImageToVideoPipeline` ones (`THUDM/CogVideoX-5b-I2V`, `THUDM/CogVideoX1.5-5B-I2V`)."""

    spec_class = CogVideoXSpec

    @classmethod
    def component_classes(cls, spec: CogVideoXSpec) -> ComponentClasses:
        """T5, CogVideoX's VAE, and the DPM scheduler the evaluation protocol samples with (`use_sampler`)."""
        from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler
        from transformers import T5EncoderModel

        return ComponentClasses(
            text_encoder=T5EncoderModel, vae=AutoencoderKLCogVideoX, scheduler=CogVideoXDPMScheduler
        )

    def latent_normalization(self) -> tuple[float, float]:
        """CogVideoX's latents are the VAE sample times `scaling_factor`."""
        return 0.0, self.vae.config.scaling_factor

    def sample_latents(self, moments: torch.Tensor) -> torch.Tensor:
        """`(B, 2C', F, H', W')` moments -> scaled latents `(B, F, C', H', W')`."""
        return rearrange(super().sample_latents(moments), "b c f h w -> b f c h w").contiguous()

    def channels_first(self, latents: torch.Tensor) -> torch.Tensor:
        """CogVideoX's latents `(B, F, C', H', W')` -> `(B, C', F, H', W')`."""
        return rearrange(latents, "b f c h w -> b c f h w")

    @torch.no_grad()
    # Adapted from diffusers' pipelines/cogvideo/pipeline_cogvideox.py (`CogVideoXPipeline._get_t5_prompt_embeds`).
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> `prompt_embeds`, T5 embeddings `(B, max_text_seq_length, D)`, padded as the pipeline pads
        them (`options.max_sequence_length` is the spec's `max_text_seq_length`)."""
        tokens = self.tokenize(prompts, self.options.max_sequence_length, add_special_tokens=True)
        return {"prompt_embeds": self.text_encoder(tokens.input_ids.to(self.text_encoder.device))[0]}

    @torch.no_grad()
    # Adapted from diffusers' examples/cogvideo/train_cogvideox_image_to_video_lora.py (the image latents in `main`).
    def image_encoder_outputs(
        self, first_frames: torch.Tensor, videos: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """An image-to-video run's first frames `(B, C, H, W)` in [-1, 1] -> `image_latent_moments`, the VAE posterior
        of each frame alone after the conditioning-noise augmentation (`IMAGE_NOISE_LOG_SIGMA`, one sigma per
        frame), scaled as `CogVideoXImageToVideoPipeline.prepare_latents` scales the image latents: `(B, 2C', 1, H',
        W')`. Nothing for a text-to-video run."""
        if not self.options.image_to_video:
            return {}
        frames = first_frames.to(self.vae.device, self.vae.dtype)
        mean, std = IMAGE_NOISE_LOG_SIGMA
        sigma = torch.exp(mean + std * torch.randn(frames.shape[0], device=frames.device, dtype=frames.dtype))
        noisy = frames + sigma.view(-1, 1, 1, 1) * torch.randn_like(frames)
        scale = self.vae.config.scaling_factor
        if self.vae.config.get("invert_scale_latents", False):  # CogVideoX 1.5's VAE: the pipeline divides
            scale = 1 / scale
        posterior = self.vae.encode(rearrange(noisy, "b c h w -> b c 1 h w")).latent_dist
        return {"image_latent_moments": scaled_moments(posterior, 0.0, scale)}

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> Any:
        """The text (and image) outputs -> `prompt_embeds` for text-to-video, else a `CogVideoXImageConditioning`
        with a fresh sample of the image latents (the pipeline samples its image's posterior)."""
        if not self.options.image_to_video:
            return outputs["prompt_embeds"]
        return CogVideoXImageConditioning(
            prompt_embeds=outputs["prompt_embeds"], image_latents=self.sample_latents(outputs["image_latent_moments"])
        )

    # Adapted from diffusers' pipelines/cogvideo/pipeline_cogvideox_image2video.py (`prepare_latents`).
    @staticmethod
    def condition_video(image_latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Image latents `(B, 1, C, H, W)` -> the condition video `(B, num_frames, C, H, W)`: the image, then zeros
        (for CogVideoX 1.5, `num_frames` counts the padding, and the image takes the padding's place first)."""
        padding = image_latents.new_zeros(image_latents.shape[0], num_frames - 1, *image_latents.shape[2:])
        return torch.cat([image_latents, padding], dim=1)

    def pad_latent_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """`(B, F, C, H, W)` -> `(B, F', C, H, W)`, F' the multiple of CogVideoX 1.5's `patch_size_t` at or above F:
        the padding goes first, where `CogVideoXPipeline` samples and then drops it, and copies latent frame 0.
        CogVideoX 1.0 latents come back unchanged."""
        missing = -latents.shape[1] % (self.transformer.config.patch_size_t or 1)
        if not missing:
            return latents
        return torch.cat([latents[:, :1].expand(-1, missing, -1, -1, -1), latents], dim=1)

    # Adapted from diffusers' examples/cogvideo/train_cogvideox_lora.py (the training step in `main`).
    def diffusion_loss(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        conditioning: torch.Tensor | CogVideoXImageConditioning,
        *,
        timesteps: torch.Tensor | None = None,
    ):
        """The weighted x0 error on `latents` `(B, F, C, H, W)`, padded first for CogVideoX 1.5 (the padding copies
        count in the loss, see the module docstring); `conditioning` `(B, L, D)` T5 embeddings, or for image-to-video
        a `CogVideoXImageConditioning`, whose condition video is concatenated to the noisy latents' channels;
        `timesteps` `(B,)` integer timesteps, drawn from U{0..999} when `None`."""
        latents = self.pad_latent_frames(latents)
        batch, num_frames, _, height, width = latents.shape
        noise = torch.randn_like(latents)
        if timesteps is None:
            timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch,), device=latents.device)
        timesteps = timesteps.to(latents.device, torch.long)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        inputs, image = noisy, {}
        if isinstance(conditioning, CogVideoXImageConditioning):
            condition = self.condition_video(conditioning.image_latents.to(noisy), num_frames)
            inputs, conditioning = torch.cat([noisy, condition], dim=2), conditioning.prompt_embeds
            if self.spec.has_ofs:
                image["ofs"] = noisy.new_full((1,), OFS)
        model_output = transformer(
            hidden_states=inputs,
            encoder_hidden_states=conditioning,
            timestep=timesteps,
            image_rotary_emb=self._rotary_embeddings(num_frames, height, width, latents.device),
            return_dict=False,
            **image,
        )[0]
        prediction = self.scheduler.get_velocity(model_output, noisy, timesteps)  # v-prediction -> x0
        alphas_cumprod = self.scheduler.alphas_cumprod
        weights = (1 / (1 - alphas_cumprod[timesteps.to(alphas_cumprod.device)])).float()
        squared_error = (prediction.float() - latents.float()).pow(2).flatten(1)
        per_sample = (weights.to(latents.device).view(-1, 1) * squared_error).mean(1)
        return {"diffusion": per_sample.mean()}

    # Adapted from diffusers' examples/cogvideo/train_cogvideox_lora.py (`prepare_rotary_positional_embeddings`).
    def _rotary_embeddings(self, num_frames: int, height: int, width: int, device: torch.device):
        """3D RoPE (cos, sin), each `(F_tokens * H_tokens * W_tokens, attention_head_dim)`, for a latent grid of
        `num_frames` (padded) x `height` x `width`, as `CogVideoXPipeline` builds it (5B only; None for the 2B
        model)."""
        config = self.transformer.config
        if not config.use_rotary_positional_embeddings:
            return None
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

        grid = (height // config.patch_size, width // config.patch_size)
        base_width, base_height = config.sample_width // config.patch_size, config.sample_height // config.patch_size
        if config.patch_size_t is not None:  # CogVideoX 1.5: positions in patches, up to the sample size
            return get_3d_rotary_pos_embed(
                embed_dim=config.attention_head_dim,
                crops_coords=None,
                grid_size=grid,
                temporal_size=num_frames // config.patch_size_t,
                grid_type="slice",
                max_size=(base_height, base_width),
                device=device,
            )
        return get_3d_rotary_pos_embed(
            embed_dim=config.attention_head_dim,
            crops_coords=get_resize_crop_region_for_grid(grid, base_width, base_height),
            grid_size=grid,
            temporal_size=num_frames,
            device=device,
        )

    def pipeline(self, transformer: nn.Module):
        """The run's pipeline (`CogVideoXPipeline`, or `CogVideoXImageToVideoPipeline` for image-to-video) around
        the live `transformer`, sampling as the evaluation protocol does."""
        pipe = self.spec.pipeline_class(
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            transformer=transformer,
            scheduler=self.scheduler,
        )
        self.spec.use_sampler(pipe)
        return pipe
