"""LTX-Video 0.9.x (diffusers' `LTXPipeline`) behind the `ModelSpec` / `ModelAdapter` interface.

The training objective is finetrainers' for LTX-Video: latents are the VAE's sample normalised per channel as
`LTXPipeline._normalize_latents` does, `(x - latents_mean) * scaling_factor / latents_std`, `(B, C, F, H, W)`; the
transformer takes them packed into `(B, F*H*W, C)` tokens (patch 1, frame-major, as `LTXPipeline._pack_latents`),
the latent sizes and the RoPE scale of the frame rate, and is trained with flow matching (`FlowMatching`: sigma per
sample, `x_t = (1 - sigma) x_0 + sigma * noise`, timestep `1000 sigma`, target `noise - x_0`). The prompt is T5
embeddings with their attention mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from einops import rearrange
from torch import nn

from ..errors import GridError, ModelLayoutError
from .adapter import ComponentClasses, ModelAdapter
from .first_frame import (
    DEFAULT_FIRST_FRAME_CONDITIONING_P,
    condition_batch,
    first_frame_share,
    loss_mask,
)
from .options import GenerationSettings, TrainingOptions
from .registry import register_adapter
from .spec import Grid, ModelSpec, frame_count_problem, side_problem


class LTXPromptEmbeds(NamedTuple):
    """A batch of encoded prompts, what `LTXVideoAdapter.diffusion_loss` takes as its conditioning.

    Attributes:
        embeds (`torch.Tensor`): T5 embeddings `(B, L, D)`, padded to `L` tokens.
        attention_mask (`torch.Tensor`): bool `(B, L)`, `True` on the prompt's tokens, `False` on the padding.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor


# Adapted from diffusers' pipelines/ltx/pipeline_ltx.py (`LTXPipeline._pack_latents`).
def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """Latents `(B, C, F, H, W)` -> transformer tokens `(B, F*H*W, C)`, frame-major (patch 1)."""
    return rearrange(latents, "b c f h w -> b (f h w) c")


@dataclass(frozen=True)
class LTXVideoSpec(ModelSpec):
    """LTX-Video's shape rules: a causal VAE (first frame alone, then `temporal_compression` frames per latent
    frame) that compresses `spatial_compression` pixels into one latent pixel, a transformer with patch 1 (one token
    per latent pixel), and prompts of `default_max_sequence_length` T5 tokens by default."""

    family = "ltx_video"
    pipeline_class_name = "LTXPipeline"
    #: LTX-Video 0.9.5 and later are published as `LTXConditionPipeline`: `LTXPipeline`'s components (the same
    #: transformer, VAE and T5 classes), trained here for text-to-video.
    detected_pipeline_class_names: ClassVar[tuple[str, ...]] = ("LTXConditionPipeline", "LTXImageToVideoPipeline")
    #: The stock pipeline that generates from a first frame (`LTXPipeline`'s components), for I2V runs.
    image_to_video_pipeline_class_name: ClassVar[str | None] = "LTXImageToVideoPipeline"
    #: The share of samples conditioned on their first latent frame when the run does not give it (finetrainers').
    default_first_frame_conditioning_p: ClassVar[float] = DEFAULT_FIRST_FRAME_CONDITIONING_P
    transformer_class_name = "LTXVideoTransformer3DModel"
    vae_class_name = "AutoencoderKLLTXVideo"
    samplers = ("pipeline",)
    uses_flow_matching = True
    #: The frame rate LTX-Video is conditioned on (`LTXPipeline`'s default `frame_rate`, through the RoPE time
    #: scale): training and generation use the same, and the videos are written at it.
    fps: ClassVar[int] = 25
    #: `LTXPipeline`'s default text length.
    default_max_sequence_length: ClassVar[int] = 128

    temporal_compression: int = 8
    spatial_compression: int = 32

    @classmethod
    def read_tasks(cls, model_index: dict, transformer_config: dict) -> frozenset[str]:
        """Every LTX-Video checkpoint generates from text alone and from a first frame (the same transformer; the
        image-to-video pipeline puts the image's latents on the first latent frame)."""
        return frozenset({"t2v", "i2v"})

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
    ) -> LTXVideoSpec:
        """The compression ratios are the VAE's own, as it derives them from its config (built on the meta device: no
        memory, no weights)."""
        from diffusers import AutoencoderKLLTXVideo

        name, config = pretrained_model_name_or_path, transformer_config
        patches = (config.get("patch_size", 1), config.get("patch_size_t", 1))
        if patches != (1, 1):
            raise GridError(
                f"`pretrained_model_name_or_path={name!r}` has transformer patches (spatial, temporal) {patches}; "
                "this adapter supports LTX-Video 0.9.x, whose patches are (1, 1)."
            )
        with torch.device("meta"):
            vae = AutoencoderKLLTXVideo.from_config(vae_config or {})
        return cls(
            **cls.transformer_fields(name, config, revision=revision, cache_dir=cache_dir),
            temporal_compression=vae.temporal_compression_ratio,
            spatial_compression=vae.spatial_compression_ratio,
        )

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: 32 (`LTXPipeline.check_inputs`) and the VAE's compression."""
        return math.lcm(32, self.spatial_compression)

    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        return (
            (num_frames - 1) // self.temporal_compression + 1,
            height // self.spatial_compression,
            width // self.spatial_compression,
        )

    def rope_interpolation_scale(self) -> tuple[float, float, float]:
        """The transformer's RoPE scale (frame, row, column) at `fps`, as `LTXPipeline` computes it."""
        return (self.temporal_compression / self.fps, self.spatial_compression, self.spatial_compression)

    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        t, step = self.temporal_compression, self.size_multiple
        bad = [frame_count_problem(num_frames, t)] if (num_frames - 1) % t or num_frames < 1 else []
        why = f"VAE x{self.spatial_compression}, LTXPipeline's 32"
        bad += side_problem("height", height, step, why) + side_problem("width", width, step, why)
        if bad:
            raise GridError("LTX-Video cannot take this clip size: " + "; ".join(bad) + ".")

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """`LTXPipeline` has no dynamic guidance; prompts need at least one token."""
        super().check_options(training=training)
        if use_dynamic_cfg:
            raise ModelLayoutError(
                "`use_dynamic_cfg=True`: not supported by LTX-Video (LTXPipeline has no dynamic guidance); drop it."
            )
        if training.max_sequence_length is not None and training.max_sequence_length < 1:
            raise ModelLayoutError(
                f"`max_sequence_length={training.max_sequence_length}` must be positive (LTX-Video's pipeline uses "
                f"{self.default_max_sequence_length})."
            )

    @property
    def default_depth(self) -> int:
        """The paper's share of the blocks, 60 % (18 of CogVideoX-2B's 30, its best in the depth ablation): 17 of
        LTX-Video 2B's 28 blocks, 29 of the 13B's 48. LTX-Video has no published alignment depth, and like
        CogVideoX every block carries video tokens at one resolution (patch 1 after a 32x VAE), so the relative
        depth that the paper found best is the one to start from."""
        return super().default_depth

    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """`LTXPipeline` arguments, at the frame rate the model was trained for (`fps`)."""
        return {
            "num_frames": settings.num_frames,
            "height": settings.height,
            "width": settings.width,
            "frame_rate": self.fps,
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "max_sequence_length": self.resolve_max_sequence_length(settings.max_sequence_length),
        }


@register_adapter
class LTXVideoAdapter(ModelAdapter):
    """`LTXPipeline` checkpoints (e.g. `Lightricks/LTX-Video`, `Lightricks/LTX-Video-0.9.1`), and the
    `LTXConditionPipeline` ones of LTX-Video 0.9.5 and later, for text-to-video."""

    spec_class = LTXVideoSpec

    @classmethod
    def component_classes(cls, spec: LTXVideoSpec) -> ComponentClasses:
        """T5, LTX-Video's VAE, and the checkpoint's flow-matching Euler scheduler."""
        from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler
        from transformers import T5EncoderModel

        return ComponentClasses(
            text_encoder=T5EncoderModel, vae=AutoencoderKLLTXVideo, scheduler=FlowMatchEulerDiscreteScheduler
        )

    def latent_normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LTX-Video's latents are the VAE sample normalised per channel as `LTXPipeline._normalize_latents` does:
        `(z - latents_mean) * scaling_factor / latents_std`."""
        return self.vae.latents_mean, self.vae.config.scaling_factor / self.vae.latents_std

    @torch.no_grad()
    # Adapted from diffusers' pipelines/ltx/pipeline_ltx.py (`LTXPipeline._get_t5_prompt_embeds`).
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> `prompt_embeds`, T5 embeddings `(B, L, D)`, and `prompt_attention_mask` `(B, L)`, padded as
        `LTXPipeline` pads them to `L = options.max_sequence_length` tokens (by default the pipeline's 128)."""
        tokens = self.tokenize(prompts, self.options.max_sequence_length, add_special_tokens=True)
        device = self.text_encoder.device
        embeds = self.text_encoder(tokens.input_ids.to(device))[0]
        return {"prompt_embeds": embeds, "prompt_attention_mask": tokens.attention_mask.bool().to(device)}

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> LTXPromptEmbeds:
        """The embeddings and their bool mask, as `diffusion_loss` takes them."""
        return LTXPromptEmbeds(outputs["prompt_embeds"], outputs["prompt_attention_mask"].bool())

    def diffusion_loss(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        conditioning: LTXPromptEmbeds,
        *,
        timesteps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Flow matching (`options.flow_matching`): one sigma per sample is drawn, then the noise `(B, C, F, H, W)`;
        the transformer sees the noisy latents packed into `(B, F*H*W, C)` tokens at timestep `1000 sigma` and its
        prediction is compared with the packed `noise - latents`.

        Args:
            transformer (`nn.Module`): the (possibly wrapped) `LTXVideoTransformer3DModel`.
            latents (`torch.Tensor`): normalised latents `(B, C, F, H, W)` (`encode_videos`).
            conditioning (`LTXPromptEmbeds`): the prompts (`encode_prompts`).
            timesteps (`torch.Tensor`, *optional*): `(B,)` timesteps fixing `sigma = timesteps / num_train_timesteps`
                instead of drawing it.

        Returns:
            `dict[str, torch.Tensor]`: `{"diffusion": loss}`, a scalar.
        """
        batch, _, num_frames, height, width = latents.shape
        flow = self.options.flow_matching
        sigmas = flow.sigmas(
            batch, latents.device, timesteps=timesteps, num_train_timesteps=self.scheduler.config.num_train_timesteps
        )
        noise = torch.randn_like(latents)
        noisy = flow.noisy(latents, noise, sigmas)
        timestep = sigmas * self.scheduler.config.num_train_timesteps
        noisy, timestep, token_mask = condition_batch(latents, noisy, timestep, self.first_frame_conditioning_p)
        prediction = transformer(
            hidden_states=pack_latents(noisy),
            encoder_hidden_states=conditioning.embeds,
            timestep=timestep,
            encoder_attention_mask=conditioning.attention_mask,
            num_frames=num_frames,
            height=height,
            width=width,
            rope_interpolation_scale=self.spec.rope_interpolation_scale(),
            return_dict=False,
        )[0]
        return {
            "diffusion": flow.loss(
                prediction, pack_latents(latents), pack_latents(noise), sigmas, mask=loss_mask(token_mask)
            )
        }

    @property
    def first_frame_conditioning_p(self) -> float:
        """The share of samples conditioned on their first latent frame (`first_frame_share`)."""
        return first_frame_share(self.options)

    def pipeline(self, transformer: nn.Module):
        """An `LTXPipeline` around the live `transformer`, with the checkpoint's own scheduler."""
        return self.spec.pipeline_class(
            scheduler=self.scheduler,
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            transformer=transformer,
        )
