"""Sana-Video text-to-video (diffusers' `SanaVideoPipeline`) behind the `ModelSpec` / `ModelAdapter` interface.

The training objective is flow matching (`FlowMatching`), as SimpleTuner trains the model
(`simpletuner/helpers/models/sanavideo`): latents are the VAE's sample (Wan 2.1's for the 480p checkpoint, LTX-2's
for the 720p one) normalised per channel, `(z - latents_mean) / latents_std` (the pipeline decodes
`latents * latents_std + latents_mean`), `(B, C, F, H, W)`;
sigma is drawn per sample, `x_t = (1 - sigma) x_0 + sigma * noise`, the transformer sees `t = 1000 sigma` (the
timesteps of the pipeline's flow DPM-Solver) and predicts `noise - x_0`. SimpleTuner draws sigma uniformly from the
checkpoint's unshifted 1000-level table and weighs every sample 1: `--flow_weighting_scheme none` does the same.

Prompts are encoded exactly as `SanaVideoPipeline.__call__` encodes them: lower-cased, after the pipeline's complex
human instruction, by Gemma 2, of which the first token and the last `L - 1` are kept with their attention mask
(`L = max_sequence_length`, the pipeline's 300 by default; a caption keeps at most `L - 2` tokens). The hooked
block's output is the video tokens `(B, F*H*W, D)`, frame-major, on the token grid (patch 1 x 2 x 2).

`SanaVideoPipeline` has diffusers' `SanaLoraLoaderMixin`: a LoRA is saved and loaded with the pipeline's own
`save_lora_weights` / `load_lora_weights`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..errors import GridError, ModelLayoutError
from .adapter import ComponentClasses, ModelAdapter
from .options import GenerationSettings, TrainingOptions
from .registry import register_adapter
from .spec import Grid, ModelSpec, frame_count_problem, side_problem


#: The VAEs of the released checkpoints: Wan 2.1's (480p) and LTX-2's (720p); `SanaVideoPipeline` normalises both
#: per channel with `latents_mean` / `latents_std` (Wan's in its config, LTX-2's as buffers).
VAE_CLASSES = ("AutoencoderKLWan", "AutoencoderKLLTX2Video")


class SanaVideoPromptEmbeds(NamedTuple):
    """A batch of encoded prompts, what `SanaVideoAdapter.diffusion_loss` takes as its conditioning.

    Attributes:
        embeds (`torch.Tensor`): Gemma 2 states `(B, L, D)`.
        attention_mask (`torch.Tensor`): `(B, L)`, 1 on the kept instruction token and the caption's tokens.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor


@dataclass(frozen=True)
class SanaVideoSpec(ModelSpec):
    """Sana-Video's shape rules: a causal VAE, `vae_class` (Wan 2.1's: x4 in time, x8 in space; LTX-2's: x8, x32),
    that encodes the first frame alone, then `temporal_compression` frames per latent frame, `spatial_compression`
    pixels per latent pixel; a transformer with patches `patch_size` (frame, row, column), and sides that
    `SanaVideoPipeline.check_inputs` wants multiples of 32."""

    family = "sana_video"
    pipeline_class_name = "SanaVideoPipeline"
    transformer_class_name = "SanaVideoTransformer3DModel"
    vae_class_name = "AutoencoderKLWan"
    uses_flow_matching = True
    #: Sana-Video's frame rate (its 81-frame videos are 5 s).
    fps: ClassVar[int] = 16
    #: `SanaVideoPipeline`'s text length (`__call__`'s `max_sequence_length`).
    default_max_sequence_length: ClassVar[int] = 300
    #: `SanaVideoPipeline.check_inputs`: height and width must be multiples of 32.
    pipeline_size_multiple: ClassVar[int] = 32

    temporal_compression: int = 4
    spatial_compression: int = 8
    patch_size: tuple[int, int, int] = (1, 2, 2)
    vae_class: str = "AutoencoderKLWan"

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
    ) -> SanaVideoSpec:
        """The blocks and patches from the transformer's config; the VAE's class from `model_index.json` (one of
        `VAE_CLASSES`: `AutoencoderDC`, which `SanaVideoPipeline` also takes, is refused, no checkpoint uses it) and
        its compression as the pipeline reads it (Wan's `scale_factor_temporal` / `scale_factor_spatial`, LTX-2's
        `temporal_compression_ratio` / `spatial_compression_ratio`, derived by its class where its config has none)."""
        name, config, vae = pretrained_model_name_or_path, transformer_config, vae_config or {}
        vae_class = (model_index.get("vae") or [None, cls.vae_class_name])[1]
        if vae_class not in VAE_CLASSES:
            raise ModelLayoutError(
                f"`pretrained_model_name_or_path={name!r}` has a `{vae_class}` VAE; this adapter trains Sana-Video "
                f"with one of {VAE_CLASSES}, the VAEs of the released checkpoints."
            )
        patch_size = tuple(config.get("patch_size", (1, 2, 2)))
        if patch_size[0] != 1:
            raise GridError(
                f"`pretrained_model_name_or_path={name!r}` has temporal patch {patch_size[0]}; 1 expected."
            )
        if vae_class == "AutoencoderKLWan":
            compression = vae.get("scale_factor_temporal", 4), vae.get("scale_factor_spatial", 8)
        else:
            from diffusers import AutoencoderKLLTX2Video

            with torch.device("meta"):  # the class derives the ratios its config leaves out
                ltx2 = AutoencoderKLLTX2Video.from_config(vae)
            compression = ltx2.temporal_compression_ratio, ltx2.spatial_compression_ratio
        return cls(
            **cls.transformer_fields(name, config, revision=revision, cache_dir=cache_dir),
            temporal_compression=compression[0],
            spatial_compression=compression[1],
            patch_size=patch_size,
            vae_class=vae_class,
        )

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: 32 (the pipeline's rule) and one patch of latent pixels."""
        _, ph, pw = self.patch_size
        pixels = self.spatial_compression
        return math.lcm(self.pipeline_size_multiple, pixels * ph, pixels * pw)

    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        _, ph, pw = self.patch_size
        return (
            (num_frames - 1) // self.temporal_compression + 1,
            height // self.spatial_compression // ph,
            width // self.spatial_compression // pw,
        )

    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        t, step = self.temporal_compression, self.size_multiple
        bad = [frame_count_problem(num_frames, t)] if (num_frames - 1) % t or num_frames < 1 else []
        bad += side_problem("height", height, step) + side_problem("width", width, step)
        if bad:
            raise GridError("Sana-Video cannot take this clip size: " + "; ".join(bad) + ".")

    @property
    def default_depth(self) -> int:
        """The paper's share of the blocks, 60 % (18 of CogVideoX-2B's 30, its best in the depth ablation): 12 of the
        2B model's 20 blocks. Every Sana-Video block carries all the video tokens at one resolution (patch 1 x 2 x 2
        after the x8 VAE) with global (linear) 3D self-attention and the text through cross-attention, as CogVideoX's
        blocks carry them with full attention, so the relative depth the paper found best is the one to start from;
        no Sana-Video depth ablation says otherwise."""
        return super().default_depth

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """`SanaVideoPipeline` has no dynamic guidance; its text length keeps the first token and `L - 2` caption
        tokens, so `L` is at least 3."""
        super().check_options(training=training)
        if use_dynamic_cfg:
            raise ModelLayoutError("`use_dynamic_cfg=True`: SanaVideoPipeline has no dynamic guidance; drop it.")
        length = training.max_sequence_length
        if length is not None and length < 3:
            raise ModelLayoutError(
                f"`max_sequence_length={length}` must be at least 3 (the first token and `max_sequence_length - 2` "
                f"caption tokens; SanaVideoPipeline uses {self.default_max_sequence_length})."
            )

    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """`SanaVideoPipeline` arguments (`frames` is its name for the frame count), at exactly the trained size:
        `use_resolution_binning=False` (the pipeline's binning would move the size to its nearest 480p or 720p
        bucket and resize the video back)."""
        return {
            "frames": settings.num_frames,
            "height": settings.height,
            "width": settings.width,
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "max_sequence_length": self.resolve_max_sequence_length(settings.max_sequence_length),
            "use_resolution_binning": False,
        }


@register_adapter
class SanaVideoAdapter(ModelAdapter):
    """`SanaVideoPipeline` checkpoints (e.g. `Efficient-Large-Model/SANA-Video_2B_480p_diffusers`,
    `Efficient-Large-Model/SANA-Video_2B_720p_diffusers`)."""

    spec_class = SanaVideoSpec

    @classmethod
    def component_classes(cls, spec: SanaVideoSpec) -> ComponentClasses:
        """Gemma 2, the checkpoint's VAE (`spec.vae_class`) and its flow DPM-Solver scheduler."""
        import diffusers
        from transformers import Gemma2Model

        return ComponentClasses(
            text_encoder=Gemma2Model,
            vae=getattr(diffusers, spec.vae_class),
            scheduler=diffusers.DPMSolverMultistepScheduler,
        )

    # --- Data -> model inputs ---------------------------------------------------------------------------------

    def latent_normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sana-Video's latents are the VAE's sample normalised per channel: `(z - latents_mean) / latents_std`, with
        the Wan VAE's config values or the LTX-2 VAE's buffers (`SanaVideoPipeline` undoes it before decoding; it
        applies no `scaling_factor`)."""
        if self.spec.vae_class == "AutoencoderKLWan":
            mean, std = (torch.tensor(self.vae.config[key]) for key in ("latents_mean", "latents_std"))
        else:
            mean, std = self.vae.latents_mean, self.vae.latents_std
        return mean, 1 / std

    def _encoder_pipeline(self):
        """A `SanaVideoPipeline` holding only the tokenizer and Gemma 2 (those loaded now), whose `encode_prompt`
        encodes the prompts."""
        return self.spec.pipeline_class(
            tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=None, transformer=None, scheduler=None
        )

    @torch.no_grad()
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> `prompt_embeds`, Gemma 2's last hidden states `(B, L, D)`, and `prompt_attention_mask`
        `(B, L)`, `L = options.max_sequence_length` (by default the pipeline's 300), by `SanaVideoPipeline.
        encode_prompt` with the complex human instruction `__call__` uses; captions of more than `L - 2` tokens
        (the pipeline cuts them) are counted in `truncated_captions`."""
        pipe, instruction = self._encoder_pipeline(), complex_human_instruction()
        length = self.options.max_sequence_length
        prefix = "\n".join(instruction)
        counted = self.tokenizer([prefix + prompt for prompt in pipe._text_preprocessing(prompts)]).input_ids
        instruction_tokens = len(self.tokenizer.encode(prefix))
        self.truncated_captions.add(prompts, [len(ids) - instruction_tokens for ids in counted], length - 2)
        embeds, mask, _, _ = pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            device=self.text_encoder.device,
            max_sequence_length=length,
            complex_human_instruction=instruction,
        )
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> SanaVideoPromptEmbeds:
        """The embeddings and their mask, as `diffusion_loss` takes them."""
        return SanaVideoPromptEmbeds(outputs["prompt_embeds"], outputs["prompt_attention_mask"])

    # --- Training forward -------------------------------------------------------------------------------------

    def diffusion_loss(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        conditioning: SanaVideoPromptEmbeds,
        *,
        timesteps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Flow matching (`options.flow_matching`) on `latents` `(B, C, F, H, W)`: one sigma per sample is drawn (or
        `timesteps / num_train_timesteps` for given `timesteps` `(B,)`), then the noise; the transformer sees the
        noisy latents and the masked prompt at timestep `1000 sigma`, and its prediction is compared with
        `noise - latents`.

        Returns:
            `dict[str, torch.Tensor]`: `{"diffusion": loss}`, a scalar.
        """
        flow, steps = self.options.flow_matching, self.scheduler.config.num_train_timesteps
        sigmas = flow.sigmas(latents.shape[0], latents.device, timesteps=timesteps, num_train_timesteps=steps)
        noise = torch.randn_like(latents)
        prediction = transformer(
            hidden_states=flow.noisy(latents, noise, sigmas),
            encoder_hidden_states=conditioning.embeds,
            encoder_attention_mask=conditioning.attention_mask,
            timestep=(sigmas * steps).to(latents.dtype),
            return_dict=False,
        )[0]
        return {"diffusion": flow.loss(prediction, latents, noise, sigmas)}

    # --- Validation -------------------------------------------------------------------------------------------

    def pipeline(self, transformer: nn.Module):
        """A `SanaVideoPipeline` around the live `transformer`, with the checkpoint's scheduler."""
        return self.spec.pipeline_class(
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            transformer=transformer,
            scheduler=self.scheduler,
        )


def complex_human_instruction() -> list[str]:
    """The complex human instruction `SanaVideoPipeline.__call__` puts before every caption (its default)."""
    from diffusers import SanaVideoPipeline

    return list(inspect.signature(SanaVideoPipeline.__call__).parameters["complex_human_instruction"].default)
