"""Kandinsky 5.0 Video, text to video (diffusers' `Kandinsky5T2VPipeline`: Lite and Pro) behind the `ModelSpec` /
`ModelAdapter` interface.

The training objective is the pipeline's and SimpleTuner's (`simpletuner/helpers/models/kandinsky5_video`) for this
family: latents are the HunyuanVideo VAE's sample times its `scaling_factor` (`Kandinsky5T2VPipeline` divides by it
before decoding), `(B, C, F, H, W)`; the transformer takes them channels-last `(B, F, H, W, C)`, with the zero
image condition and its zero mask appended on the channels where the checkpoint has `visual_cond` (the released T2V
checkpoints do; the pipeline appends them for text to video), at timestep `1000 sigma`, and predicts the velocity
`noise - x_0` (`FlowMatching`). RoPE positions and the resolution's RoPE scale are the pipeline's; attention is
dense (`sparse_params=None`, as SimpleTuner trains, also for the NABLA 10 s checkpoints). The prompt is the last
hidden state of Qwen2.5-VL over the pipeline's prompt template (the template's first
`prompt_template_encode_start_idx` tokens dropped) and CLIP's pooled output. The hooked visual block's output is
`(B, F*H*W, D)`, frame-major, on the token grid (patch 1 x 2 x 2).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from einops import rearrange
from torch import nn

from ..errors import GridError, ModelLayoutError
from ..hooks import BlockFeatureExtractor
from .adapter import ComponentClasses, ModelAdapter
from .options import GenerationSettings, TrainingOptions
from .registry import register_adapter
from .spec import Grid, ModelSpec, frame_count_problem, side_problem


#: The block list alignment depths count in: the visual (decoder) blocks; the text blocks before them see no video.
VISUAL_BLOCKS = "visual_transformer_blocks"
#: Tokens of CLIP's prompt, as `Kandinsky5T2VPipeline._encode_prompt_clip` pads them.
CLIP_MAX_LENGTH = 77


class KandinskyEncoders(NamedTuple):
    """The pipeline's two text encoders (or their two tokenizers), held in `ModelAdapter.text_encoder` (and
    `ModelAdapter.tokenizer`).

    Attributes:
        qwen: Qwen2.5-VL (`text_encoder`), or its tokenizer (`tokenizer`).
        clip: CLIP's text model (`text_encoder_2`), or its tokenizer (`tokenizer_2`).
    """

    qwen: Any
    clip: Any


class KandinskyPromptEmbeds(NamedTuple):
    """A batch of encoded prompts, what `Kandinsky5Adapter.diffusion_loss` takes as its conditioning.

    Attributes:
        embeds (`torch.Tensor`): Qwen2.5-VL states `(B, L, D)`, `L` the batch's longest prompt (the pipeline pads a
            batch to its longest prompt, and the transformer attends to all `L`).
        pooled (`torch.Tensor`): CLIP's pooled output `(B, D2)`.
    """

    embeds: torch.Tensor
    pooled: torch.Tensor


@dataclass(frozen=True)
class Kandinsky5Spec(ModelSpec):
    """Kandinsky 5's shape rules: the HunyuanVideo VAE (causal: first frame alone, then `temporal_compression`
    frames per latent frame; `spatial_compression` in space), a transformer with patches `patch_size` (frame, row,
    column), and prompts of at most `default_max_sequence_length` Qwen2.5-VL tokens by default."""

    family = "kandinsky5"
    pipeline_class_name = "Kandinsky5T2VPipeline"
    transformer_class_name = "Kandinsky5Transformer3DModel"
    vae_class_name = "AutoencoderKLHunyuanVideo"
    uses_flow_matching = True
    #: Kandinsky 5's frame rate (its 5 s and 10 s checkpoints make 121 and 241 frames at 24 fps).
    fps: ClassVar[int] = 24
    #: `Kandinsky5T2VPipeline`'s default text length (`__call__`'s `max_sequence_length`).
    default_max_sequence_length: ClassVar[int] = 512
    #: `Kandinsky5T2VPipeline.check_inputs` refuses longer prompts.
    max_text_length: ClassVar[int] = 1024

    temporal_compression: int = 4
    spatial_compression: int = 8
    patch_size: tuple[int, int, int] = (1, 2, 2)
    visual_cond: bool = True

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
    ) -> Kandinsky5Spec:
        """The visual blocks (`num_visual_blocks`, `model_dim` wide), the patches and `visual_cond` from the
        transformer's config; the compression ratios from the VAE's (`None`: the HunyuanVideo VAE's 4 and 8)."""
        config, vae = transformer_config, vae_config or {}
        patch_size = tuple(config.get("patch_size", (1, 2, 2)))
        if patch_size[0] != 1:
            raise GridError(
                f"`pretrained_model_name_or_path={pretrained_model_name_or_path!r}` has temporal patch "
                f"{patch_size[0]}; Kandinsky5T2VPipeline supports 1."
            )
        return cls(
            pretrained_model_name_or_path=pretrained_model_name_or_path,
            num_blocks=config.get("num_visual_blocks", 32),
            hidden_size=config.get("model_dim", 2048),
            min_depth=1,
            revision=revision,
            cache_dir=cache_dir,
            temporal_compression=vae.get("temporal_compression_ratio", 4),
            spatial_compression=vae.get("spatial_compression_ratio", 8),
            patch_size=patch_size,
            visual_cond=bool(config.get("visual_cond", False)),
        )

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: 16 (`Kandinsky5T2VPipeline.check_inputs`) and one patch of
        latent pixels."""
        _, ph, pw = self.patch_size
        return math.lcm(16, self.spatial_compression * ph, self.spatial_compression * pw)

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
            raise GridError("Kandinsky 5 cannot take this clip size: " + "; ".join(bad) + ".")

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """`Kandinsky5T2VPipeline` has no dynamic guidance and takes prompts of 1 to 1024 tokens."""
        super().check_options(training=training)
        if use_dynamic_cfg:
            raise ModelLayoutError(
                "`use_dynamic_cfg=True`: not supported by Kandinsky 5 (Kandinsky5T2VPipeline has no dynamic "
                "guidance); drop it."
            )
        length = training.max_sequence_length
        if length is not None and not 1 <= length <= self.max_text_length:
            raise ModelLayoutError(
                f"`max_sequence_length={length}` must be in [1, {self.max_text_length}] (Kandinsky5T2VPipeline's "
                f"limit; it uses {self.default_max_sequence_length})."
            )

    @property
    def default_depth(self) -> int:
        """The paper's share of the blocks, 60 % (18 of CogVideoX-2B's 30, its best in the depth ablation): 19 of
        Kandinsky 5 Lite's 32 visual blocks, 36 of Pro's 60. Kandinsky 5 has no published alignment depth; like
        CogVideoX every visual block carries the video tokens at one resolution (and the text only through
        cross-attention), so the relative depth that the paper found best is the one to start from."""
        return super().default_depth

    @staticmethod
    # Adapted from diffusers' pipelines/kandinsky5/pipeline_kandinsky.py (`Kandinsky5T2VPipeline._get_scale_factor`).
    def rope_scale(height: int, width: int) -> tuple[float, float, float]:
        """The transformer's RoPE scale (frame, row, column) for clips of `height` x `width` pixels, as the pipeline
        chooses it: (1, 2, 2) when both sides are within 480..854 pixels, (1, 3.16, 3.16) otherwise."""
        return (1, 2, 2) if all(480 <= side <= 854 for side in (height, width)) else (1, 3.16, 3.16)

    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """`Kandinsky5T2VPipeline` arguments (its own negative prompt under guidance)."""
        return {
            "num_frames": settings.num_frames,
            "height": settings.height,
            "width": settings.width,
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "max_sequence_length": self.resolve_max_sequence_length(settings.max_sequence_length),
        }


@register_adapter
class Kandinsky5Adapter(ModelAdapter):
    """`Kandinsky5T2VPipeline` checkpoints (e.g. `kandinskylab/Kandinsky-5.0-T2V-Lite-sft-5s-Diffusers`, the Lite
    pretrain / sft / nocfg / distilled 5 s and 10 s ones, `kandinskylab/Kandinsky-5.0-T2V-Pro-sft-5s-Diffusers`).
    `tokenizer` and `text_encoder` each hold the pipeline's two (`KandinskyEncoders`: Qwen2.5-VL and CLIP)."""

    spec_class = Kandinsky5Spec
    #: The attention projections of the text and visual blocks (self- and cross-attention): queries, keys and values
    #: (SimpleTuner's Kandinsky 5 targets) and the output projection, as the other families adapt theirs.
    lora_target_modules: ClassVar[list[str]] = [
        "to_query",
        "to_key",
        "to_value",
        "self_attention.out_layer",
        "cross_attention.out_layer",
    ]

    @classmethod
    def component_classes(cls, spec: Kandinsky5Spec) -> ComponentClasses:
        """Qwen2.5-VL, the HunyuanVideo VAE and the checkpoint's flow-matching Euler scheduler (CLIP, the second
        text encoder, is read by `load_encoders`)."""
        from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler
        from transformers import Qwen2_5_VLForConditionalGeneration

        return ComponentClasses(
            text_encoder=Qwen2_5_VLForConditionalGeneration,
            vae=AutoencoderKLHunyuanVideo,
            scheduler=FlowMatchEulerDiscreteScheduler,
        )

    @classmethod
    def load_encoders(cls, spec, *, variant=None, weight_dtype=torch.float32, device="cpu") -> dict[str, Any]:
        """As the base (Qwen2.5-VL's tokenizer, read with `AutoTokenizer` from the checkpoint's processor folder), and
        CLIP from `text_encoder_2/` and `tokenizer_2/`, each pair held as `KandinskyEncoders`."""
        from transformers import AutoTokenizer, CLIPTextModel

        loaded = super().load_encoders(spec, variant=variant, weight_dtype=weight_dtype, device=device)
        name, kwargs = spec.pretrained_model_name_or_path, {"revision": spec.revision, "cache_dir": spec.cache_dir}
        clip = CLIPTextModel.from_pretrained(
            name, subfolder="text_encoder_2", dtype=weight_dtype, variant=variant, **kwargs
        )
        return {
            "tokenizer": KandinskyEncoders(
                loaded["tokenizer"], AutoTokenizer.from_pretrained(name, subfolder="tokenizer_2", **kwargs)
            ),
            "text_encoder": KandinskyEncoders(loaded["text_encoder"], clip.requires_grad_(False).to(device)),
            "vae": loaded["vae"],
        }

    @classmethod
    def pipeline_components(cls, pipe) -> dict[str, Any]:
        """A `Kandinsky5T2VPipeline`'s components, with its two tokenizers and two text encoders as
        `KandinskyEncoders`."""
        return {
            "tokenizer": KandinskyEncoders(pipe.tokenizer, pipe.tokenizer_2),
            "text_encoder": KandinskyEncoders(pipe.text_encoder, pipe.text_encoder_2),
            "vae": pipe.vae,
            "transformer": pipe.transformer,
            "scheduler": pipe.scheduler,
        }

    # --- Data -> model inputs ---------------------------------------------------------------------------------

    def latent_normalization(self) -> tuple[float, float]:
        """Kandinsky 5's latents are the VAE sample times `scaling_factor` (the pipeline divides by it to decode)."""
        return 0.0, self.vae.config.scaling_factor

    @functools.cached_property
    def _prompt_template(self) -> tuple[str, int]:
        """The pipeline's Qwen2.5-VL prompt template and the number of its leading tokens it drops, read from an
        empty `Kandinsky5T2VPipeline` (its `__init__` sets them)."""
        pipe = self.spec.pipeline_class(
            transformer=None,
            vae=None,
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            scheduler=None,
        )
        return pipe.prompt_template, pipe.prompt_template_encode_start_idx

    @torch.no_grad()
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> `prompt_embeds`, Qwen2.5-VL's last hidden states `(B, L, D)`, `prompt_attention_mask` `(B, L)`
        and `pooled_prompt_embeds`, CLIP's pooled output `(B, D2)`, as `Kandinsky5T2VPipeline.encode_prompt` encodes
        each prompt (cleaned, in its template, cut to `L = options.max_sequence_length` tokens, by default 512),
        padded on the right to `L` (`conditioning` keeps the batch's longest prompt)."""
        from diffusers.pipelines.kandinsky5.pipeline_kandinsky import prompt_clean

        prompts = [prompt_clean(prompt) for prompt in prompts]
        embeds, mask = self._qwen_outputs(prompts)
        tokenizer, encoder = self.tokenizer.clip, self.text_encoder.clip
        tokens = tokenizer(
            prompts,
            max_length=CLIP_MAX_LENGTH,
            truncation=True,
            add_special_tokens=True,
            padding="max_length",
            return_tensors="pt",
        ).to(encoder.device)
        pooled = encoder(**tokens)["pooler_output"]
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask, "pooled_prompt_embeds": pooled}

    # Adapted from diffusers' pipelines/kandinsky5/pipeline_kandinsky.py (`Kandinsky5T2VPipeline._encode_prompt_qwen`).
    def _qwen_outputs(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Qwen2.5-VL's last hidden states `(B, L, D)` after the template's first tokens, and their bool mask
        `(B, L)`. A prompt longer than `L` tokens loses its end as the pipeline cuts it (the text of its tokens
        from `L - 2` on, before the template's closing tokens); the cut ones are counted in `truncated_captions`."""
        tokenizer, encoder = self.tokenizer.qwen, self.text_encoder.qwen
        template, start = self._prompt_template
        length = self.options.max_sequence_length
        texts = [template.format(prompt) for prompt in prompts]
        untruncated = tokenizer(texts, add_special_tokens=True).input_ids
        self.truncated_captions.add(prompts, [len(ids) - start for ids in untruncated], length)
        for i, ids in enumerate(untruncated):
            if len(ids) > start + length:
                removed = tokenizer.decode(ids[start:-2][length - 2 :])
                texts[i] = texts[i][: -len(removed)] if removed else texts[i]
        tokens = tokenizer(
            texts,
            max_length=start + length,
            truncation=True,
            padding="max_length",
            padding_side="right",
            return_tensors="pt",
        )
        device = encoder.device
        states = encoder(input_ids=tokens.input_ids.to(device), return_dict=True, output_hidden_states=True)
        return states["hidden_states"][-1][:, start:], tokens.attention_mask[:, start:].bool().to(device)

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> KandinskyPromptEmbeds:
        """The embeddings cut to the batch's longest prompt (what the pipeline encodes for the batch: the
        tokenizer pads it to its longest, the transformer has no text mask), and CLIP's pooled output."""
        length = max(int(outputs["prompt_attention_mask"].sum(1).max()), 1)
        return KandinskyPromptEmbeds(outputs["prompt_embeds"][:, :length], outputs["pooled_prompt_embeds"])

    # --- Training forward -------------------------------------------------------------------------------------

    def diffusion_loss(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        conditioning: KandinskyPromptEmbeds,
        *,
        timesteps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Flow matching (`options.flow_matching`): one sigma per sample is drawn, then the noise `(B, C, F, H, W)`;
        the transformer sees the noisy latents channels-last (with the zero image condition and mask of a
        `visual_cond` checkpoint) at timestep `1000 sigma`, the pipeline's RoPE positions and scale, and its
        prediction is compared with `noise - latents`.

        Args:
            transformer (`nn.Module`): the (possibly wrapped) `Kandinsky5Transformer3DModel`.
            latents (`torch.Tensor`): scaled latents `(B, C, F, H, W)` (`encode_videos`).
            conditioning (`KandinskyPromptEmbeds`): the prompts (`encode_prompts`).
            timesteps (`torch.Tensor`, *optional*): `(B,)` timesteps fixing `sigma = timesteps / num_train_timesteps`
                instead of drawing it.

        Returns:
            `dict[str, torch.Tensor]`: `{"diffusion": loss}`, a scalar.
        """
        batch, _, frames, height, width = latents.shape
        flow, steps = self.options.flow_matching, self.scheduler.config.num_train_timesteps
        sigmas = flow.sigmas(batch, latents.device, timesteps=timesteps, num_train_timesteps=steps)
        noise = torch.randn_like(latents)
        hidden = rearrange(flow.noisy(latents, noise, sigmas), "b c f h w -> b f h w c")
        if self.spec.visual_cond:  # text to video: no image, a zero condition and a zero mask
            hidden = torch.cat([hidden, torch.zeros_like(hidden), torch.zeros_like(hidden[..., :1])], dim=-1)
        _, ph, pw = self.spec.patch_size
        device, scale = latents.device, self.spec.spatial_compression
        prediction = transformer(
            hidden_states=hidden,
            encoder_hidden_states=conditioning.embeds,
            pooled_projections=conditioning.pooled,
            timestep=sigmas * steps,
            visual_rope_pos=[
                torch.arange(frames, device=device),
                torch.arange(height // ph, device=device),
                torch.arange(width // pw, device=device),
            ],
            text_rope_pos=torch.arange(conditioning.embeds.shape[1], device=device),
            scale_factor=self.spec.rope_scale(height * scale, width * scale),
            sparse_params=None,
            return_dict=True,
        ).sample
        target = rearrange(latents, "b c f h w -> b f h w c"), rearrange(noise, "b c f h w -> b f h w c")
        return {"diffusion": flow.loss(prediction, *target, sigmas)}

    def feature_extractor(self, transformer: nn.Module, depth: int) -> BlockFeatureExtractor:
        """Hooks visual block `depth` (counted from 1): its output is the video tokens `(B, F*H*W, D)`, frame-major."""
        self.spec.check_depth(depth)
        return BlockFeatureExtractor(transformer, module_path=f"{VISUAL_BLOCKS}.{depth - 1}")

    # --- Validation -------------------------------------------------------------------------------------------

    def pipeline(self, transformer: nn.Module):
        """A `Kandinsky5T2VPipeline` around the live `transformer`, with both text encoders and the checkpoint's
        scheduler."""
        return self.spec.pipeline_class(
            transformer=transformer,
            vae=self.vae,
            text_encoder=self.text_encoder.qwen,
            tokenizer=self.tokenizer.qwen,
            text_encoder_2=self.text_encoder.clip,
            tokenizer_2=self.tokenizer.clip,
            scheduler=self.scheduler,
        )
