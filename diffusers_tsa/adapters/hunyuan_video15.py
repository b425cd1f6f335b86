"""HunyuanVideo 1.5 text-to-video (diffusers' `HunyuanVideo15Pipeline`) and image-to-video
(`HunyuanVideo15ImageToVideoPipeline`) behind the `ModelSpec` / `ModelAdapter` interface.

The training objective is flow matching (`FlowMatching`), as SimpleTuner trains the model: latents are the VAE's
sample times the VAE config's `scaling_factor` (the pipeline decodes `latents / scaling_factor`), `(B, C, F, H, W)`;
sigma is drawn per sample, `x_t = (1 - sigma) x_0 + sigma * noise`, the transformer sees `t = 1000 sigma` and predicts
`noise - x_0`. As the pipeline does for text-to-video, the transformer's input is the noisy latents beside an all-zero
conditioning latent and an all-zero mask (`(B, 2C + 1, F, H, W)`), and its image embeddings are all zero (so masked
out): only the video latents are noised and predicted.

Image-to-video (`TrainingOptions.image_to_video`, `*_i2v` checkpoints), as `HunyuanVideo15ImageToVideoPipeline`
conditions (`prepare_cond_latents_and_mask`, `encode_image`): the conditioning latent is the VAE mode of the clip's
first frame times `scaling_factor` on latent frame 0 and zeros after it, the mask is 1 on latent frame 0, and the
image embeddings are SigLIP's last hidden states of the first frame as an 8-bit image. Every frame is denoised and in
the loss; the condition enters every token of latent frame 0 through the input channels, so all video tokens are the
alignment's queries and keys. That pipeline generates at the size bucket of the transformer's `target_size` closest
to the image's aspect ratio: an image-to-video run trains at one of those sizes.

Prompts are encoded by both of the pipeline's text encoders, exactly as `HunyuanVideo15Pipeline.encode_prompt` does:
Qwen2.5-VL's third-to-last hidden states of the chat-templated caption, the template's first 108 tokens cropped, and
ByT5's embeddings of the caption's quoted text (glyphs), all zero with an all-zero mask when it quotes nothing.

`HunyuanVideo15Pipeline` has no `load_lora_weights`: a LoRA is saved in diffusers' pipeline layout (keys
`transformer.*`, its config in the header) and loads with the transformer's own `load_lora_adapter`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from einops import rearrange
from torch import nn

from ..errors import GridError, ModelLayoutError
from ..hooks import unwrap_model
from .adapter import ComponentClasses, ModelAdapter
from .options import GenerationSettings, TrainingOptions
from .registry import register_adapter
from .spec import LORA_WEIGHT_NAME, Grid, ModelSpec, frame_count_problem, side_problem


#: Image-embedding tokens the pipeline gives the transformer (`vision_num_semantic_tokens`), all zero for text-to-video.
VISION_TOKENS = 729
#: The chat template's tokens the pipeline crops from Qwen2.5-VL's output (`prompt_template_encode_start_idx`).
TEMPLATE_TOKENS = 108
#: ByT5 tokens of the quoted text (`tokenizer_2_max_length`).
GLYPH_TOKENS = 256


class HunyuanVideo15PromptEmbeds(NamedTuple):
    """A batch of encoded prompts, what `HunyuanVideo15Adapter.diffusion_loss` takes as its conditioning.

    Attributes:
        embeds (`torch.Tensor`): Qwen2.5-VL embeddings `(B, L, D)`.
        attention_mask (`torch.Tensor`): `(B, L)`, 1 on the caption's tokens.
        glyph_embeds (`torch.Tensor`): ByT5 embeddings of the quoted text `(B, 256, D2)`.
        glyph_attention_mask (`torch.Tensor`): `(B, 256)`, 1 on the quoted text's tokens (none without quotes).
        image_latents (`torch.Tensor`, *optional*): image-to-video: the first frames' scaled VAE mode
            `(B, C, 1, H, W)`.
        image_embeds (`torch.Tensor`, *optional*): image-to-video: SigLIP's last hidden states `(B, N, D3)`.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    glyph_embeds: torch.Tensor
    glyph_attention_mask: torch.Tensor
    image_latents: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None


@dataclass(frozen=True)
class HunyuanVideo15Spec(ModelSpec):
    """HunyuanVideo 1.5's shape rules: a causal VAE (first frame alone, then `temporal_compression` frames per latent
    frame) that compresses `spatial_compression` pixels into one latent pixel, and a transformer with patches
    (`patch_size_t`, `patch_size`, `patch_size`) (1 x 1 x 1 in the released checkpoints). `target_size` is the
    transformer's, whose size buckets the image-to-video pipeline generates at."""

    family = "hunyuan_video15"
    pipeline_class_name = "HunyuanVideo15Pipeline"
    image_to_video_pipeline_class_name = "HunyuanVideo15ImageToVideoPipeline"
    transformer_class_name = "HunyuanVideo15Transformer3DModel"
    vae_class_name = "AutoencoderKLHunyuanVideo15"
    uses_flow_matching = True
    #: HunyuanVideo 1.5's frame rate (121 frames are its 5 s videos).
    fps: ClassVar[int] = 24
    #: `HunyuanVideo15Pipeline`'s Qwen2.5-VL text length (`tokenizer_max_length`).
    default_max_sequence_length: ClassVar[int] = 1000
    usage_lora_method: ClassVar[str] = "pipe.transformer.load_lora_adapter"

    temporal_compression: int = 4
    spatial_compression: int = 16
    patch_size: int = 1
    patch_size_t: int = 1
    target_size: int = 640

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
    ) -> HunyuanVideo15Spec:
        """The compression ratios are the VAE config's; an image-to-video transformer (`task_type="i2v"`) outside a
        `HunyuanVideo15ImageToVideoPipeline` checkpoint is refused."""
        name, config, vae = pretrained_model_name_or_path, transformer_config, vae_config or {}
        i2v_checkpoint = (model_index or {}).get("_class_name") == cls.image_to_video_pipeline_class_name
        if config.get("task_type") == "i2v" and not i2v_checkpoint:
            raise ModelLayoutError(
                f"`pretrained_model_name_or_path={name!r}` has an image-to-video HunyuanVideo 1.5 transformer "
                f"(`task_type='i2v'`) outside a `{cls.image_to_video_pipeline_class_name}` checkpoint: use a `*_t2v` "
                "checkpoint, or an `*_i2v` one with --image_to_video."
            )
        return cls(
            **cls.transformer_fields(name, config, revision=revision, cache_dir=cache_dir),
            temporal_compression=vae.get("temporal_compression_ratio", cls.temporal_compression),
            spatial_compression=vae.get("spatial_compression_ratio", cls.spatial_compression),
            patch_size=config.get("patch_size", 1),
            patch_size_t=config.get("patch_size_t", 1),
            target_size=config.get("target_size", cls.target_size),
        )

    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        latent_frames = (num_frames - 1) // self.temporal_compression + 1
        pixels = self.spatial_compression * self.patch_size
        return (latent_frames // self.patch_size_t, height // pixels, width // pixels)

    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        t, pixels = self.temporal_compression, self.spatial_compression * self.patch_size
        bad = []
        if (num_frames - 1) % t or num_frames < 1 or ((num_frames - 1) // t + 1) % self.patch_size_t:
            bad.append(frame_count_problem(num_frames, t))
        why = f"VAE x{self.spatial_compression}, patch {self.patch_size}"
        bad += side_problem("height", height, pixels, why) + side_problem("width", width, pixels, why)
        if self.tasks == {"i2v"} and (height, width) not in self.size_buckets():
            nearest = self.nearest_bucket(height, width)
            bad.append(
                f"`height={height}`, `width={width}` is not a size {self.image_to_video_pipeline_class_name} generates "
                f"at (the buckets of its `target_size={self.target_size}`): the nearest for this aspect ratio is "
                f"`--height {nearest[0]} --width {nearest[1]}`"
            )
        if bad:
            raise GridError("HunyuanVideo 1.5 cannot take this clip size: " + "; ".join(bad) + ".")

    def size_buckets(self) -> list[tuple[int, int]]:
        """The (height, width) sizes `HunyuanVideo15ImageToVideoPipeline` generates at: the buckets of the
        transformer's `target_size` (`calculate_default_height_width`), one per aspect ratio."""
        from diffusers.pipelines.hunyuan_video1_5.image_processor import generate_crop_size_list

        return [tuple(size) for size in generate_crop_size_list(self.target_size, self.spatial_compression)]

    def nearest_bucket(self, height: int, width: int) -> tuple[int, int]:
        """The bucket the image-to-video pipeline generates at for an image of `height` x `width`."""
        from diffusers.pipelines.hunyuan_video1_5.image_processor import get_closest_ratio

        buckets = self.size_buckets()
        ratios = np.array([round(h / w, 5) for h, w in buckets])
        return tuple(get_closest_ratio(height, width, ratios, buckets)[0])

    @property
    def default_depth(self) -> int:
        """The paper's share of the blocks, 60 % (18 of CogVideoX-2B's 30, its best in the depth ablation): 32 of the
        8.3B model's 54 blocks. Like CogVideoX's, its dual-stream blocks all carry every video token at one
        resolution (patch 1 after a x16 VAE) with full 3D attention beside the text, so the relative depth the
        paper found best is the one to start from; no HunyuanVideo depth ablation says otherwise."""
        return super().default_depth

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """`HunyuanVideo15Pipeline` has no dynamic guidance; prompts need at least one token."""
        super().check_options(training=training)
        if use_dynamic_cfg:
            raise ModelLayoutError("`use_dynamic_cfg=True`: HunyuanVideo15Pipeline has no dynamic guidance; drop it.")
        if training.max_sequence_length is not None and training.max_sequence_length < 1:
            raise ModelLayoutError(
                f"`max_sequence_length={training.max_sequence_length}` must be positive (HunyuanVideo 1.5's pipeline "
                f"uses {self.default_max_sequence_length})."
            )

    def _load_lora(self, pipe, lora, *, weight_name, scale) -> None:
        """The transformer's `load_lora_adapter` (the pipeline has no `load_lora_weights`): rank and alpha come from
        the file's metadata."""
        pipe.transformer.load_lora_adapter(os.fspath(lora), weight_name=weight_name or LORA_WEIGHT_NAME)
        if scale != 1.0:
            pipe.transformer.set_adapters(list(pipe.transformer.peft_config), [scale])

    def configure_pipeline(self, pipe, settings: GenerationSettings) -> None:
        """The pipeline takes its guidance from its `guider` and its text length from `tokenizer_max_length`: both
        set from `settings` (the text length the run trained with, by default the pipeline's 1000)."""
        pipe.guider = pipe.guider.new(guidance_scale=settings.guidance_scale)
        pipe.tokenizer_max_length = self.resolve_max_sequence_length(settings.max_sequence_length)

    def usage_setup(self, settings: GenerationSettings) -> list[str]:
        """`configure_pipeline` as the card's code writes it."""
        length = self.resolve_max_sequence_length(settings.max_sequence_length)
        return [
            f"pipe.guider = pipe.guider.new(guidance_scale={settings.guidance_scale!r})",
            f"pipe.tokenizer_max_length = {length!r}",
        ]

    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """`HunyuanVideo15Pipeline` arguments (guidance and text length are set by `configure_pipeline`); the
        image-to-video pipeline takes its size from the image (its bucket, `nearest_bucket`)."""
        size = {} if self.image_to_video else {"height": settings.height, "width": settings.width}
        return {"num_frames": settings.num_frames, **size, "num_inference_steps": settings.num_inference_steps}


@register_adapter
class HunyuanVideo15Adapter(ModelAdapter):
    """`HunyuanVideo15Pipeline` checkpoints (e.g. `hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v`, its
    720p and distilled text-to-video kinds) and `HunyuanVideo15ImageToVideoPipeline` ones (`*_i2v`).
    `text_encoder_2` and `tokenizer_2` are ByT5's, for quoted text; `image_encoder` and `image_processor` SigLIP's
    (the pipeline's `feature_extractor`), for an image-to-video run."""

    spec_class = HunyuanVideo15Spec
    encoder_components: ClassVar[tuple[str, ...]] = (*ModelAdapter.encoder_components, "tokenizer_2", "text_encoder_2")
    image_encoder_components: ClassVar[tuple[str, ...]] = ("image_encoder", "image_processor")

    def __init__(self, spec: ModelSpec, *, tokenizer_2=None, text_encoder_2=None, **components):
        super().__init__(spec, **components)
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2

    @classmethod
    def pipeline_components(cls, pipe) -> dict[str, Any]:
        """As the base; the image-to-video pipeline's `feature_extractor` is the adapter's `image_processor`."""
        return {**super().pipeline_components(pipe), "image_processor": getattr(pipe, "feature_extractor", None)}

    @classmethod
    def component_classes(cls, spec: HunyuanVideo15Spec) -> ComponentClasses:
        """Qwen2.5-VL's text model, HunyuanVideo 1.5's VAE, and the checkpoint's flow-matching Euler scheduler."""
        from diffusers import AutoencoderKLHunyuanVideo15, FlowMatchEulerDiscreteScheduler
        from transformers import Qwen2_5_VLTextModel

        return ComponentClasses(
            text_encoder=Qwen2_5_VLTextModel,
            vae=AutoencoderKLHunyuanVideo15,
            scheduler=FlowMatchEulerDiscreteScheduler,
        )

    @classmethod
    def load_encoders(cls, spec, *, variant=None, weight_dtype=torch.float32, device="cpu") -> dict[str, Any]:
        """As the base, with ByT5 (`tokenizer_2`, `text_encoder_2`) and, for an image-to-video run, SigLIP
        (`image_encoder`, and its `feature_extractor` as `image_processor`), frozen, in `weight_dtype` on
        `device`."""
        from transformers import AutoTokenizer, T5EncoderModel

        encoders = super().load_encoders(spec, variant=variant, weight_dtype=weight_dtype, device=device)
        name, kwargs = spec.pretrained_model_name_or_path, {"revision": spec.revision, "cache_dir": spec.cache_dir}
        glyphs = T5EncoderModel.from_pretrained(
            name, subfolder="text_encoder_2", dtype=weight_dtype, variant=variant, **kwargs
        )
        encoders = {
            **encoders,
            "tokenizer_2": AutoTokenizer.from_pretrained(name, subfolder="tokenizer_2", **kwargs),
            "text_encoder_2": glyphs.requires_grad_(False).to(device),
        }
        if not spec.image_to_video:
            return encoders
        from transformers import SiglipImageProcessor, SiglipVisionModel

        vision = SiglipVisionModel.from_pretrained(
            name, subfolder="image_encoder", dtype=weight_dtype, variant=variant, **kwargs
        )
        return {
            **encoders,
            "image_encoder": vision.requires_grad_(False).eval().to(device),
            "image_processor": SiglipImageProcessor.from_pretrained(name, subfolder="feature_extractor", **kwargs),
        }

    # --- Data -> model inputs ---------------------------------------------------------------------------------

    def latent_normalization(self) -> tuple[float, float]:
        """HunyuanVideo 1.5's latents are the VAE sample times `scaling_factor` (the pipeline decodes
        `latents / scaling_factor`)."""
        return 0.0, self.vae.config.scaling_factor

    @torch.no_grad()
    def latent_moments(self, videos: torch.Tensor) -> torch.Tensor:
        """As the base, one clip at a time: the VAE's causal mid-block attention mask does not broadcast over a batch
        of several clips (diffusers 0.42)."""
        return torch.cat([super(HunyuanVideo15Adapter, self).latent_moments(clip[None]) for clip in videos])

    @torch.no_grad()
    # Adapted from diffusers' pipelines/hunyuan_video1_5/pipeline_hunyuan_video1_5.py (`_get_mllm_prompt_embeds`,
    # `_get_byt5_prompt_embeds`).
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> `prompt_embeds` `(B, L, D)` and `prompt_attention_mask` `(B, L)`, L =
        `options.max_sequence_length` (by default the pipeline's 1000), and `prompt_embeds_2` `(B, 256, D2)` and
        `prompt_attention_mask_2` `(B, 256)`, as `HunyuanVideo15Pipeline.encode_prompt` encodes them."""
        from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import (
            HunyuanVideo15Pipeline,
            extract_glyph_texts,
            format_text_input,
        )

        device, length = self.text_encoder.device, self.options.max_sequence_length
        chats = format_text_input(prompts, _system_message())
        counted = self.tokenizer.apply_chat_template(
            chats, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        self.truncated_captions.add(prompts, [len(ids) - TEMPLATE_TOKENS for ids in counted["input_ids"]], length)
        embeds, mask = HunyuanVideo15Pipeline._get_mllm_prompt_embeds(
            self.text_encoder,
            self.tokenizer,
            prompts,
            device,
            tokenizer_max_length=length,
            system_message=_system_message(),
            crop_start=TEMPLATE_TOKENS,
        )
        glyph_texts = [extract_glyph_texts(prompt) for prompt in prompts]
        glyph_embeds = torch.zeros(
            len(prompts),
            GLYPH_TOKENS,
            self.text_encoder_2.config.d_model,
            device=device,
            dtype=self.text_encoder_2.dtype,
        )
        glyph_mask = torch.zeros(len(prompts), GLYPH_TOKENS, dtype=torch.int64, device=device)
        for i, text in enumerate(glyph_texts):
            if text is None:
                continue
            tokens = self.tokenizer_2(
                text, padding="max_length", max_length=GLYPH_TOKENS, truncation=True, return_tensors="pt"
            ).to(self.text_encoder_2.device)
            glyph_embeds[i] = self.text_encoder_2(tokens.input_ids, attention_mask=tokens.attention_mask.float())[0][0]
            glyph_mask[i] = tokens.attention_mask[0]
        return {
            "prompt_embeds": embeds,
            "prompt_attention_mask": mask,
            "prompt_embeds_2": glyph_embeds,
            "prompt_attention_mask_2": glyph_mask,
        }

    @torch.no_grad()
    # Adapted from diffusers' pipelines/hunyuan_video1_5/pipeline_hunyuan_video1_5_image2video.py
    # (`_get_image_latents`, `_get_image_embeds`).
    def image_encoder_outputs(
        self, first_frames: torch.Tensor, videos: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """An image-to-video run's first frames `(B, C, H, W)` in [-1, 1] -> `image_latent_moments`, each frame's VAE
        posterior alone in the latent space `(B, 2C', 1, H', W')`, and `image_embeds`, SigLIP's last hidden states
        of the frames as 8-bit images (what the pipeline is given) `(B, N, D3)`. Nothing for text-to-video."""
        if not self.options.image_to_video:
            return {}
        moments = self.latent_moments(rearrange(first_frames, "b c h w -> b 1 c h w"))
        pixels = ((first_frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        images = list(rearrange(pixels, "b c h w -> b h w c").cpu().numpy())
        inputs = self.image_processor.preprocess(images=images, do_resize=True, return_tensors="pt")
        inputs = inputs.to(self.image_encoder.device, self.image_encoder.dtype)
        return {"image_latent_moments": moments, "image_embeds": self.image_encoder(**inputs).last_hidden_state}

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> HunyuanVideo15PromptEmbeds:
        """Both encoders' embeddings and masks, as `diffusion_loss` takes them; for image-to-video also the first
        frames' latents (the posterior's mode: the pipeline encodes its image with `sample_mode="argmax"`) and
        SigLIP embeddings."""
        image = {}
        if self.options.image_to_video:
            mode = outputs["image_latent_moments"].chunk(2, dim=1)[0]
            image = {"image_latents": mode, "image_embeds": outputs["image_embeds"]}
        return HunyuanVideo15PromptEmbeds(
            outputs["prompt_embeds"],
            outputs["prompt_attention_mask"],
            outputs["prompt_embeds_2"],
            outputs["prompt_attention_mask_2"],
            **image,
        )

    # --- Training forward -------------------------------------------------------------------------------------

    def diffusion_loss(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        conditioning: HunyuanVideo15PromptEmbeds,
        *,
        timesteps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Flow matching (`options.flow_matching`) on `latents` `(B, C, F, H, W)`: one sigma per sample is drawn (or
        `timesteps / num_train_timesteps` for given `timesteps` `(B,)`), then the noise; the transformer sees the
        noisy latents beside the pipeline's all-zero text-to-video conditioning latent and mask, all-zero image
        embeddings (for image-to-video: the first frame's latent on latent frame 0, a mask of 1 there, and its
        SigLIP embeddings), at timestep `1000 sigma`, and its prediction is compared with `noise - latents`.

        Returns:
            `dict[str, torch.Tensor]`: `{"diffusion": loss}`, a scalar.
        """
        batch, channels, frames, height, width = latents.shape
        flow = self.options.flow_matching
        steps = self.scheduler.config.num_train_timesteps
        sigmas = flow.sigmas(batch, latents.device, timesteps=timesteps, num_train_timesteps=steps)
        noise = torch.randn_like(latents)
        condition = latents.new_zeros(batch, channels + 1, frames, height, width)
        config = unwrap_model(transformer).config
        image_embeds = latents.new_zeros(batch, VISION_TOKENS, config.image_embed_dim)
        if conditioning.image_latents is not None:  # `prepare_cond_latents_and_mask`, `encode_image`
            condition[:, :channels, :1] = conditioning.image_latents.to(latents)
            condition[:, channels:, :1] = 1.0
            image_embeds = conditioning.image_embeds.to(latents)
        prediction = transformer(
            hidden_states=torch.cat([flow.noisy(latents, noise, sigmas), condition], dim=1),
            timestep=(sigmas * steps).to(latents.dtype),
            encoder_hidden_states=conditioning.embeds,
            encoder_attention_mask=conditioning.attention_mask,
            encoder_hidden_states_2=conditioning.glyph_embeds,
            encoder_attention_mask_2=conditioning.glyph_attention_mask,
            image_embeds=image_embeds,
            return_dict=False,
        )[0]
        return {"diffusion": flow.loss(prediction, latents, noise, sigmas)}

    # --- What trains and what is saved ------------------------------------------------------------------------

    def save_lora_weights(self, output_dir, transformer: nn.Module) -> None:
        """diffusers' pipeline LoRA layout (keys `transformer.*`, the rank/alpha metadata under the same prefix), which
        the transformer's `load_lora_adapter` reads with its default `prefix="transformer"`."""
        from diffusers.loaders.lora_base import LoraBaseMixin
        from diffusers.training_utils import _collate_lora_metadata
        from peft.utils import get_peft_model_state_dict

        metadata = _collate_lora_metadata({"transformer": unwrap_model(transformer)})
        config = metadata["transformer_lora_adapter_metadata"]
        LoraBaseMixin.write_lora_layers(
            state_dict=LoraBaseMixin.pack_weights(get_peft_model_state_dict(transformer), "transformer"),
            save_directory=os.fspath(output_dir),
            is_main_process=True,
            weight_name=LORA_WEIGHT_NAME,
            save_function=None,
            safe_serialization=True,
            lora_adapter_metadata={f"transformer.{key}": value for key, value in config.items()},
        )

    def load_lora_weights(self, input_dir, transformer: nn.Module) -> None:
        """Loads exactly `input_dir/pytorch_lora_weights.safetensors` into the live adapter (resuming)."""
        from safetensors.torch import load_file

        path = Path(input_dir) / LORA_WEIGHT_NAME
        prefix = "transformer."
        state_dict = {k[len(prefix) :]: v for k, v in load_file(path).items() if k.startswith(prefix)}
        self._set_lora_state(transformer, state_dict, os.fspath(path))

    # --- Validation -------------------------------------------------------------------------------------------

    def pipeline(self, transformer: nn.Module):
        """The run's pipeline (`HunyuanVideo15Pipeline`, or `HunyuanVideo15ImageToVideoPipeline` with SigLIP) around
        the live `transformer`, with the checkpoint's scheduler and guider."""
        from diffusers.guiders import ClassifierFreeGuidance

        guider = ClassifierFreeGuidance.from_pretrained(
            self.spec.pretrained_model_name_or_path,
            subfolder="guider",
            revision=self.spec.revision,
            cache_dir=self.spec.cache_dir,
        )
        return self.spec.pipeline_class(
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            transformer=transformer,
            vae=self.vae,
            scheduler=self.scheduler,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            guider=guider,
            **(
                {"image_encoder": self.image_encoder, "feature_extractor": self.image_processor}
                if self.spec.image_to_video
                else {}
            ),
        )


def _system_message() -> str:
    """The system message `HunyuanVideo15Pipeline` puts before every caption (its `_get_mllm_prompt_embeds`
    default, which its `__init__` also sets)."""
    import inspect

    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import HunyuanVideo15Pipeline

    return inspect.signature(HunyuanVideo15Pipeline._get_mllm_prompt_embeds).parameters["system_message"].default
