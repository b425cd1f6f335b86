"""LTX-2 (diffusers' `LTX2Pipeline`, an audio-video model) behind the `ModelSpec` / `ModelAdapter` interface.

Text-to-video training of the video stream. The latents are the video VAE's sample normalised per channel as
`LTX2Pipeline._normalize_latents` does, `(z - latents_mean) * scaling_factor / latents_std`, `(B, C, F, H, W)`; the
transformer takes them packed into `(B, F*H*W, C)` tokens (patch 1, frame-major, as `LTX2Pipeline._pack_latents`)
and is trained with flow matching (`FlowMatching`: `x_t = (1 - sigma) x_0 + sigma * noise`, timestep `1000 sigma`,
target `noise - x_0`), as SimpleTuner's LTX-2 trainer trains its video stream. A prompt is what the pipeline gives
the transformer: Gemma's hidden states of every layer, stacked, through the checkpoint's text connectors, one
embedding for the video stream and one for the audio stream, with their attention mask.

The audio branch. The transformer denoises audio and video together (every block's video tokens attend to the audio
tokens); clips without audio train it as SimpleTuner does: the audio latents of the clip's duration are zeros (the
mean audio latent, in the normalised space), noised at the video's sigma, and their loss is dropped. The audio
stream's weights and the audio-video cross-attention stay frozen (`is_audio_parameter`): nothing in the clips
teaches them. Clips with audio are not supported: the data pipeline decodes no sound track.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..compat import dtype_argument
from ..errors import GridError, ModelLayoutError
from ..hooks import BlockFeatureExtractor
from .adapter import ComponentClasses, ModelAdapter
from .first_frame import (
    DEFAULT_FIRST_FRAME_CONDITIONING_P,
    condition_batch,
    first_frame_share,
    loss_mask,
)
from .ltx_video import pack_latents
from .options import GenerationSettings, TrainingOptions
from .registry import register_adapter
from .spec import Grid, ModelSpec, frame_count_problem, side_problem


logger = logging.getLogger(__name__)


class LTX2PromptEmbeds(NamedTuple):
    """A batch of encoded prompts, what `LTX2Adapter.diffusion_loss` takes as its conditioning.

    Attributes:
        video (`torch.Tensor`): the video connector's embeddings `(B, L, D)`.
        audio (`torch.Tensor`): the audio connector's embeddings `(B, L, D_audio)`.
        attention_mask (`torch.Tensor`): `(B, L)`, 1 on the tokens the transformer attends to.
    """

    video: torch.Tensor
    audio: torch.Tensor
    attention_mask: torch.Tensor


#: The compression ratios LTX-2's VAE config states, for a spec read without it (`student_spec` of a bare
#: transformer).
LTX2_VAE_RATIOS = {"spatial_compression_ratio": 32, "temporal_compression_ratio": 8}


def is_audio_parameter(name: str) -> bool:
    """Whether the transformer parameter `name` belongs to the audio stream or the audio-video cross-attention (a
    part of its dotted name mentions `audio` or `a2v`): what video-only clips leave frozen."""
    return any("audio" in part or "a2v" in part for part in name.split("."))


@dataclass(frozen=True)
class LTX2Spec(ModelSpec):
    """LTX-2's shape rules: a causal video VAE (first frame alone, then `temporal_compression` frames per latent
    frame) compressing `spatial_compression` pixels into one latent pixel, a transformer with patch 1, prompts of
    `default_max_sequence_length` Gemma tokens, a multiple of the connectors' `text_length_multiple` learnable
    registers, and audio latents of `audio_latents_per_second` per second of video."""

    family = "ltx2"
    pipeline_class_name = "LTX2Pipeline"
    #: The other pipelines LTX-2 checkpoints are published as: each has `LTX2Pipeline`'s components (and the same
    #: transformer), whose text-to-video training this family does.
    detected_pipeline_class_names: ClassVar[tuple[str, ...]] = (
        "LTX2ImageToVideoPipeline",
        "LTX2ConditionPipeline",
        "LTX2InContextPipeline",
        "LTX2DFRPipeline",
    )
    #: The stock pipeline that generates from a first frame (`LTX2Pipeline`'s components), for I2V runs.
    image_to_video_pipeline_class_name: ClassVar[str | None] = "LTX2ImageToVideoPipeline"
    #: The share of samples conditioned on their first latent frame when the run does not give it (finetrainers').
    default_first_frame_conditioning_p: ClassVar[float] = DEFAULT_FIRST_FRAME_CONDITIONING_P
    transformer_class_name = "LTX2VideoTransformer3DModel"
    vae_class_name = "AutoencoderKLLTX2Video"
    samplers = ("pipeline",)
    uses_flow_matching = True
    #: `LTX2Pipeline`'s default `frame_rate`: the transformer's positions are conditioned on it in training and
    #: generation, and the videos are written at it.
    fps: ClassVar[int] = 24
    #: `LTX2Pipeline`'s default text length.
    default_max_sequence_length: ClassVar[int] = 1024

    temporal_compression: int = 8
    spatial_compression: int = 32
    #: The text length must be a multiple of it: the connectors' learnable registers (1: none).
    text_length_multiple: int = 1
    #: Audio latent frames per second (`sample_rate / hop_length / 4`, the audio VAE's time compression).
    audio_latents_per_second: float = 25.0
    #: The transformer's audio input width (audio latent channels x latent mel bins, packed).
    audio_channels: int = 128
    #: The text encoder's class in `transformers` and the vocoder's in diffusers' `pipelines.ltx2`
    #: (`model_index.json`'s: LTX-2.3 has a vocoder with bandwidth extension).
    text_encoder_class_name: str = "Gemma3ForConditionalGeneration"
    vocoder_class_name: str = "LTX2Vocoder"

    @classmethod
    def from_configs(cls, pretrained_model_name_or_path, model_index, *, revision=None, cache_dir=None) -> LTX2Spec:
        """As the base (the transformer's and the video VAE's configs), with the text connectors' register count
        and the text encoder's and the vocoder's classes from `model_index.json`."""
        from diffusers.pipelines.ltx2 import LTX2TextConnectors

        spec = super().from_configs(pretrained_model_name_or_path, model_index, revision=revision, cache_dir=cache_dir)
        connectors = LTX2TextConnectors.load_config(
            pretrained_model_name_or_path, subfolder="connectors", revision=revision, cache_dir=cache_dir
        )
        registers = {
            connectors.get(f"{stream}_connector_num_learnable_registers", 128) or 1 for stream in ("video", "audio")
        }
        return replace(
            spec,
            text_length_multiple=math.lcm(*registers),
            text_encoder_class_name=model_index.get("text_encoder", [None, cls.text_encoder_class_name])[1],
            vocoder_class_name=model_index.get("vocoder", [None, cls.vocoder_class_name])[1],
        )

    @classmethod
    def read_tasks(cls, model_index: dict, transformer_config: dict) -> frozenset[str]:
        """Every LTX-2 checkpoint generates from text alone and from a first frame (the same transformer; the
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
    ) -> LTX2Spec:
        """The compression ratios are the VAE's own (built on the meta device from its config, `LTX2_VAE_RATIOS`
        without one); the audio latent
        rate and width are the transformer's (its audio positions use the same sample rate and hop length as the
        audio VAE)."""
        from diffusers import AutoencoderKLLTX2Video

        name, config = pretrained_model_name_or_path, transformer_config
        patches = (config.get("patch_size", 1), config.get("patch_size_t", 1))
        if patches != (1, 1):
            raise GridError(
                f"`pretrained_model_name_or_path={name!r}` has transformer patches (spatial, temporal) {patches}; "
                "this adapter supports LTX-2, whose patches are (1, 1)."
            )
        with torch.device("meta"):  # LTX-2's VAE states its ratios in its config (the class defaults derive others)
            vae = AutoencoderKLLTX2Video.from_config(vae_config or LTX2_VAE_RATIOS)
        rate = config.get("audio_sampling_rate", 16000) / config.get("audio_hop_length", 160)
        return cls(
            **cls.transformer_fields(name, config, revision=revision, cache_dir=cache_dir),
            temporal_compression=vae.temporal_compression_ratio,
            spatial_compression=vae.spatial_compression_ratio,
            audio_latents_per_second=rate / config.get("audio_scale_factor", 4),
            audio_channels=config.get("audio_in_channels", 128),
        )

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: 32 (`LTX2Pipeline.check_inputs`) and the VAE's compression."""
        return math.lcm(32, self.spatial_compression)

    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        return (
            (num_frames - 1) // self.temporal_compression + 1,
            height // self.spatial_compression,
            width // self.spatial_compression,
        )

    def audio_latent_frames(self, num_frames: int) -> int:
        """The audio latent frames of a `num_frames` video at `fps`, as `LTX2Pipeline` computes them:
        `round(num_frames / fps * audio_latents_per_second)`."""
        return round(num_frames / self.fps * self.audio_latents_per_second)

    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        t, step = self.temporal_compression, self.size_multiple
        bad = [frame_count_problem(num_frames, t)] if (num_frames - 1) % t or num_frames < 1 else []
        why = f"VAE x{self.spatial_compression}, LTX2Pipeline's 32"
        bad += side_problem("height", height, step, why) + side_problem("width", width, step, why)
        if bad:
            raise GridError("LTX-2 cannot take this clip size: " + "; ".join(bad) + ".")

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """`LTX2Pipeline` has no dynamic guidance; the text length is a positive multiple of the connectors'
        registers."""
        super().check_options(training=training)
        if use_dynamic_cfg:
            raise ModelLayoutError(
                "`use_dynamic_cfg=True`: not supported by LTX-2 (LTX2Pipeline has no dynamic guidance); drop it."
            )
        length, multiple = training.max_sequence_length, self.text_length_multiple
        if length is not None and (length < 1 or length % multiple):
            raise ModelLayoutError(
                f"`max_sequence_length={length}` must be a positive multiple of {multiple} (the text connectors' "
                f"learnable registers; LTX2Pipeline uses {self.default_max_sequence_length})."
            )

    @property
    def default_depth(self) -> int:
        """The paper's share of the blocks, 60 % (18 of CogVideoX-2B's 30, its best in the depth ablation): 29 of
        LTX-2's 48 blocks. As in CogVideoX, every block carries the video tokens at one resolution (patch 1 after a
        32x VAE), so the relative depth the paper found best is the one to start from."""
        return super().default_depth

    @property
    def usage_requirements(self) -> tuple[str, ...]:
        """PyAV for an image-to-video run: `LTX2ImageToVideoPipeline` re-compresses the first frame with it (H.264
        at the CRF the model was trained with)."""
        return ("av",) if self.image_to_video else ()

    def image_kwargs(self, image: Any) -> dict[str, Any]:
        """As the base; without PyAV, also `image_crf=0` (the first frame as given, not re-compressed), with one
        warning, rather than the stock pipeline's error in a validation or an evaluation."""
        from diffusers.utils import is_av_available

        if is_av_available():
            return {"image": image}
        _warn_no_pyav()
        return {"image": image, "image_crf": 0}

    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """`LTX2Pipeline` arguments, at the frame rate the model was trained for (`fps`)."""
        return {
            "num_frames": settings.num_frames,
            "height": settings.height,
            "width": settings.width,
            "frame_rate": self.fps,
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "max_sequence_length": self.resolve_max_sequence_length(settings.max_sequence_length),
        }


@functools.lru_cache(maxsize=None)
def _warn_no_pyav() -> None:
    """Says once per process that LTX-2's image-to-video pipeline runs without its first-frame re-compression."""
    logger.warning(
        "PyAV is not installed: LTX2ImageToVideoPipeline is given `image_crf=0`, the first frame without its H.264 "
        "re-compression (pip install av for the stock conditioning)."
    )


@register_adapter
class LTX2Adapter(ModelAdapter):
    """`LTX2Pipeline` checkpoints (e.g. `Lightricks/LTX-2`): text-to-video training of the video stream.

    Args:
        connectors (`LTX2TextConnectors`, *optional*): the checkpoint's text connectors, loaded with the text
            encoder (`None` without the encoders).
        **components: as `ModelAdapter`.
    """

    spec_class = LTX2Spec
    #: The video stream's self- and text cross-attention projections (`attn1`, `attn2`; not the audio stream's
    #: `audio_attn1` / `audio_attn2` nor the audio-video cross-attention), keys `LTX2Pipeline.load_lora_weights`
    #: reads.
    lora_target_modules: ClassVar[list[str]] = [
        f"{attention}.{projection}"
        for attention in ("attn1", "attn2")
        for projection in ("to_q", "to_k", "to_v", "to_out.0")
    ]

    def __init__(self, spec: LTX2Spec, *, connectors: nn.Module | None = None, **components):
        super().__init__(spec, **components)
        self.connectors = connectors

    @classmethod
    def component_classes(cls, spec: LTX2Spec) -> ComponentClasses:
        """The checkpoint's Gemma, LTX-2's video VAE, and its flow-matching Euler scheduler."""
        import transformers
        from diffusers import AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler

        return ComponentClasses(
            text_encoder=getattr(transformers, spec.text_encoder_class_name),
            vae=AutoencoderKLLTX2Video,
            scheduler=FlowMatchEulerDiscreteScheduler,
        )

    @classmethod
    def load_encoders(cls, spec: LTX2Spec, *, variant=None, weight_dtype=torch.float32, device="cpu") -> dict:
        """As the base, with the text connectors (`connectors/`), which turn Gemma's states into the prompts (and
        which `encoders_loaded` loads and frees with the others)."""
        from diffusers.pipelines.ltx2 import LTX2TextConnectors

        connectors = LTX2TextConnectors.from_pretrained(
            spec.pretrained_model_name_or_path,
            subfolder="connectors",
            variant=variant,
            revision=spec.revision,
            cache_dir=spec.cache_dir,
            **{dtype_argument(): weight_dtype},
        )
        encoders = super().load_encoders(spec, variant=variant, weight_dtype=weight_dtype, device=device)
        return {**encoders, "connectors": connectors.requires_grad_(False).to(device)}

    # --- Data -> model inputs ---------------------------------------------------------------------------------

    def latent_normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LTX-2's latents are the VAE sample normalised per channel as `LTX2Pipeline._normalize_latents` does:
        `(z - latents_mean) * scaling_factor / latents_std`."""
        return self.vae.latents_mean, self.vae.config.scaling_factor / self.vae.latents_std

    @torch.no_grad()
    # Adapted from diffusers' pipelines/ltx2/pipeline_ltx2.py (`LTX2Pipeline._get_gemma_prompt_embeds` and the
    # connectors' call in `__call__`).
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> what `LTX2Pipeline` gives its transformer for them: the prompts stripped, left-padded to
        `L = options.max_sequence_length` tokens (by default the pipeline's 1024), Gemma's hidden states of every
        layer stacked, then the text connectors: `prompt_embeds` `(B, L, D)` for the video stream,
        `audio_prompt_embeds` `(B, L, D_audio)` for the audio stream and `prompt_attention_mask` `(B, L)`."""
        self.tokenizer.padding_side = "left"  # Gemma's chat-style padding, as the pipeline sets it
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        tokens = self.tokenize([p.strip() for p in prompts], self.options.max_sequence_length, add_special_tokens=True)
        device = self.text_encoder.device
        mask = tokens.attention_mask.to(device)
        states = self.text_encoder(
            input_ids=tokens.input_ids.to(device), attention_mask=mask, output_hidden_states=True
        ).hidden_states
        stacked = torch.stack(states, dim=-1).flatten(2, 3).to(self.text_encoder.dtype)
        video, audio, attention_mask = self.connectors(stacked, mask, padding_side="left")
        return {"prompt_embeds": video, "audio_prompt_embeds": audio, "prompt_attention_mask": attention_mask}

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> LTX2PromptEmbeds:
        """The two streams' embeddings and their mask, as `diffusion_loss` takes them."""
        return LTX2PromptEmbeds(
            outputs["prompt_embeds"], outputs["audio_prompt_embeds"], outputs["prompt_attention_mask"]
        )

    # --- Training forward -------------------------------------------------------------------------------------

    def diffusion_loss(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        conditioning: LTX2PromptEmbeds,
        *,
        timesteps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Flow matching of the video stream (`options.flow_matching`): one sigma per sample is drawn, then the noise
        `(B, C, F, H, W)`; the transformer sees the noisy latents packed into `(B, F*H*W, C)` tokens at timestep
        `1000 sigma`, next to the clip's silent audio (zero latents of `spec.audio_latent_frames` frames noised at the
        same sigma), and its video prediction is compared with the packed `noise - latents`; the audio prediction
        is not trained.

        Args:
            transformer (`nn.Module`): the (possibly wrapped) `LTX2VideoTransformer3DModel`.
            latents (`torch.Tensor`): normalised latents `(B, C, F, H, W)` (`encode_videos`).
            conditioning (`LTX2PromptEmbeds`): the prompts (`encode_prompts`).
            timesteps (`torch.Tensor`, *optional*): `(B,)` timesteps fixing `sigma = timesteps / num_train_timesteps`
                instead of drawing it.

        Returns:
            `dict[str, torch.Tensor]`: `{"diffusion": loss}`, a scalar.
        """
        batch, _, num_frames, height, width = latents.shape
        flow, steps = self.options.flow_matching, self.scheduler.config.num_train_timesteps
        sigmas = flow.sigmas(batch, latents.device, timesteps=timesteps, num_train_timesteps=steps)
        noise = torch.randn_like(latents)
        audio_frames = self.spec.audio_latent_frames((num_frames - 1) * self.spec.temporal_compression + 1)
        audio_noise = torch.randn(batch, audio_frames, self.spec.audio_channels, device=latents.device)
        silence = torch.zeros_like(audio_noise)
        t = sigmas * steps
        # As `LTX2ImageToVideoPipeline`: the video stream's frame 0 at timestep 0, the audio's at t.
        noisy, video_t, token_mask = condition_batch(
            latents, flow.noisy(latents, noise, sigmas), t, self.first_frame_conditioning_p
        )
        i2v = {} if token_mask is None else {"audio_timestep": t}
        prediction = transformer(
            hidden_states=pack_latents(noisy),
            audio_hidden_states=flow.noisy(silence, audio_noise, sigmas).to(latents.dtype),
            encoder_hidden_states=conditioning.video,
            audio_encoder_hidden_states=conditioning.audio,
            timestep=video_t,
            sigma=t,  # as the pipeline passes it (LTX-2.3's prompt modulation)
            encoder_attention_mask=conditioning.attention_mask,
            audio_encoder_attention_mask=conditioning.attention_mask,
            num_frames=num_frames,
            height=height,
            width=width,
            fps=self.spec.fps,
            audio_num_frames=audio_frames,
            use_cross_timestep=True,  # the pipeline's default
            return_dict=False,
            **i2v,
        )[0]
        return {
            "diffusion": flow.loss(
                prediction, pack_latents(latents), pack_latents(noise), sigmas, mask=loss_mask(token_mask)
            )
        }

    @property
    def first_frame_conditioning_p(self) -> float:
        """The share of samples whose video stream is conditioned on its first latent frame (`first_frame_share`)."""
        return first_frame_share(self.options)

    def feature_extractor(self, transformer: nn.Module, depth: int) -> BlockFeatureExtractor:
        """Hooks the block's video hidden states (the first of the `(video, audio)` pair it returns)."""
        self.spec.check_depth(depth)
        return BlockFeatureExtractor(transformer, depth=depth, hidden_states_index=0)

    # --- What trains and what is saved ------------------------------------------------------------------------

    def enable_full_training(self) -> None:
        """Trains the video stream: every transformer weight but the audio stream's and the audio-video
        cross-attention's (`is_audio_parameter`), which video-only clips cannot teach."""
        super().enable_full_training()
        for name, parameter in self.transformer.named_parameters():
            if is_audio_parameter(name):
                parameter.requires_grad_(False)

    # --- Validation -------------------------------------------------------------------------------------------

    def pipeline(self, transformer: nn.Module):
        """An `LTX2Pipeline` around the live `transformer`, with the checkpoint's scheduler and connectors; the
        audio VAE and the vocoder, which only decode the generated sound, are read from the checkpoint (in the
        frozen weights' dtype, on the VAE's device) for this pipeline only."""
        from diffusers import AutoencoderKLLTX2Audio
        from diffusers.pipelines import ltx2

        spec = self.spec
        vocoder_class = getattr(ltx2, spec.vocoder_class_name)
        kwargs = {"revision": spec.revision, "cache_dir": spec.cache_dir, dtype_argument(): self.vae.dtype}
        audio_vae, vocoder = (
            component_class.from_pretrained(spec.pretrained_model_name_or_path, subfolder=subfolder, **kwargs).to(
                self.vae.device
            )
            for component_class, subfolder in ((AutoencoderKLLTX2Audio, "audio_vae"), (vocoder_class, "vocoder"))
        )
        return spec.pipeline_class(
            scheduler=self.scheduler,
            vae=self.vae,
            audio_vae=audio_vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            connectors=self.connectors,
            transformer=transformer,
            vocoder=vocoder,
        )
