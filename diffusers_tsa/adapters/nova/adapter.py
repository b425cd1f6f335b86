"""NOVA's training components behind the `ModelAdapter` interface, trained with NOVA's own forward and losses.

NOVA's training forward is `transformer(inputs)` in train mode and returns `loss_t2i` (frame 0) and `loss_i2i`
(later frames); NOVA's trainer adds every output whose key contains "loss", and so does `diffusion_loss`. Each
hooked `image_encoder` block returns `(B*T, P + h*w, D)`, the P video-encoder tokens of the frame first;
`alignment_tokens` strips them.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ...compat import dtype_argument
from ...errors import ModelLayoutError
from ...hooks import BlockFeatureExtractor, unwrap_model
from ..adapter import ModelAdapter
from ..registry import register_adapter
from .lora import LORA_WEIGHT_NAME, read_nova_lora, save_nova_lora
from .spec import NOVASpec


@register_adapter
class NOVAAdapter(ModelAdapter):
    """`NOVAPipeline` checkpoints (e.g. `BAAI/nova-d48w1024-osp480`).

    Text conditioning is the Phi-2 embedding of each caption, padded with NOVA's learned null rows as NOVA's
    `TextEmbed.encode_prompts` pads it; NOVA's 10 % caption dropout is applied in `diffusion_loss`. Clips are
    conditioned on NOVA's default motion (`motion_embed.base_flow`, 5, at its base 12 fps), the values
    `NOVAPipeline` generates with by default.
    """

    spec_class = NOVASpec
    lora_target_modules = ["attn.qkv", "attn.proj"]

    def __init__(self, spec: NOVASpec, **components):
        super().__init__(spec, **components)
        transformer = self.transformer
        # NOVA trains with a fresh copy of its sampling scheduler (`build_diffusion_scheduler`): sampling mutates it.
        transformer.noise_scheduler = type(self.scheduler).from_config(self.scheduler.config)
        video_patch = transformer.video_encoder.patch_embed.patch_size
        self._image_tokens_per_prefix_token = (video_patch // transformer.image_encoder.patch_embed.patch_size) ** 2

    @classmethod
    def load_components(
        cls,
        spec: NOVASpec,
        *,
        variant=None,
        weight_dtype=torch.float32,
        transformer_dtype=None,
        device="cpu",
        encoders=True,
        transformer=True,
    ) -> dict:
        """NOVA's components, read through `NOVAPipeline` (`diffnext`'s classes); the transformer is always loaded:
        NOVA's prompts are padded with its `text_embed` (`text_encoder_outputs`, `conditioning`)."""
        kwargs = {"revision": spec.revision, "variant": variant, "cache_dir": spec.cache_dir}
        dtype = dtype_argument()
        transformer = (
            spec.transformer_class.from_pretrained(
                spec.pretrained_model_name_or_path,
                subfolder="transformer",
                **{dtype: transformer_dtype or weight_dtype},
                **kwargs,
            )
            .requires_grad_(False)
            .to(device)
        )

        def load_pipeline(**left_out):
            """`NOVAPipeline` around `transformer`, its frozen components in `weight_dtype` on `device`."""
            pipe = spec.pipeline_class.from_pretrained(
                spec.pretrained_model_name_or_path,
                transformer=transformer,
                **left_out,
                **{dtype: weight_dtype},
                **kwargs,
            )
            for module in (pipe.text_encoder, pipe.vae):
                if module is not None:
                    module.requires_grad_(False).to(device)
            return pipe

        def load_encoders() -> dict:
            pipe = load_pipeline()
            return {"tokenizer": pipe.tokenizer, "text_encoder": pipe.text_encoder, "vae": pipe.vae}

        pipe = load_pipeline() if encoders else load_pipeline(tokenizer=None, text_encoder=None, vae=None)
        return {
            "tokenizer": pipe.tokenizer,
            "text_encoder": pipe.text_encoder,
            "vae": pipe.vae,
            "transformer": transformer,
            "scheduler": pipe.scheduler,
            "load_encoders": None if encoders else load_encoders,
        }

    def latent_normalization(self) -> tuple[float, float]:
        """NOVA's latents are scaled as its `vae.scale_` scales them: `(z - shift_factor) * scaling_factor`."""
        config = self.vae.config
        return config.get("shift_factor") or 0.0, config.scaling_factor

    @torch.no_grad()
    def text_encoder_outputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> `prompt_embeds`, the text encoder's states `(B, text_token_len, D_text)`, and
        `prompt_attention_mask` `(B, text_token_len)`, which of them are the caption's tokens."""
        text_embed = unwrap_model(self.transformer).text_embed
        tokens = self.tokenize(prompts, text_embed.num_tokens)
        device = self.text_encoder.device
        states = self.text_encoder(tokens.input_ids.to(device)).last_hidden_state
        return {"prompt_embeds": states, "prompt_attention_mask": tokens.attention_mask.bool().to(device)}

    def conditioning(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The caption's states, then NOVA's null rows (`text_embed.weight`, a buffer of the transformer: frozen in
        every training mode) where it has no token, exactly as `TextEmbed.encode_prompts` builds them."""
        text_embed = unwrap_model(self.transformer).text_embed
        null = text_embed.weight[: text_embed.num_tokens]
        has_token = outputs["prompt_attention_mask"].bool().to(null.device)
        return torch.where(has_token[..., None], outputs["prompt_embeds"].to(null), null)

    def diffusion_loss(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        conditioning: torch.Tensor,
        *,
        timesteps: torch.Tensor | None = None,
    ):
        """NOVA's training forward (the transformer in train mode) on latents `(B, C, F, H, W)` and text states
        `(B, L, D_text)`; returns its loss terms (`loss_t2i`, `loss_i2i`), every output whose key contains "loss",
        as NOVA's trainer sums them.

        `timesteps` changes nothing: NOVA's encoders (the blocks alignment hooks) see clean latents, and its
        per-token diffusion head draws its own noise levels inside NOVA's forward."""
        inputs = {"x": latents, "prompt": list(conditioning)}  # as a list, NOVA drops 10 % of the captions
        motion_embed = unwrap_model(transformer).motion_embed
        if motion_embed is not None:
            inputs["motion_flow"] = [motion_embed.base_flow] * latents.shape[0]
        outputs = transformer(inputs)
        return {key: value for key, value in outputs.items() if "loss" in key}

    def feature_extractor(self, transformer: nn.Module, depth: int) -> BlockFeatureExtractor:
        """Hooks `image_encoder.blocks[depth - 1]`, keeping a copy of its output (NOVA's blocks add in place)."""
        self.spec.check_depth(depth)
        return BlockFeatureExtractor(transformer, module_path=f"image_encoder.blocks.{depth - 1}", clone=True)

    def alignment_tokens(self, hidden_states: torch.Tensor, batch_size: int) -> torch.Tensor:
        """`(B*F, P + H*W, D)` image-encoder output -> `(B, F*H*W, D)` frame tokens, frame-major, without the P
        video-encoder tokens each frame's sequence starts with (the video patch covers 4 image patches)."""
        total, ratio = hidden_states.shape[1], self._image_tokens_per_prefix_token
        if total % (ratio + 1):
            raise ModelLayoutError(
                f"Expected NOVA image-encoder states of P video-encoder tokens then {ratio}P image tokens per frame, "
                f"got {total} tokens; is the hooked module an `image_encoder` block from depth {self.spec.min_depth}?"
            )
        frames = hidden_states[:, total // (ratio + 1) :]
        return rearrange(frames, "(b f) n d -> b (f n) d", b=batch_size)

    # --- What trains and what is saved ------------------------------------------------------------------------

    def _inject_lora(self, config) -> None:
        """PEFT's `inject_adapter_in_model` (NOVA's transformer has no `add_adapter`), on every attention projection
        of the video and image encoders (`attn.qkv`, `attn.proj`)."""
        from peft import inject_adapter_in_model

        inject_adapter_in_model(config, self.transformer)

    def enable_full_training(self) -> None:
        """Trains every transformer weight except those NOVA's own trainer keeps frozen: the text embedding's
        LayerNorm and the motion embedding (`NOVATrainT2VPipeline.configure_model`)."""
        super().enable_full_training()
        frozen = [self.transformer.text_embed.norm, self.transformer.motion_embed]
        for module in filter(None, frozen):
            module.requires_grad_(False)

    def enable_gradient_checkpointing(self) -> None:
        """NOVA's own checkpointing: recompute the attention and MLP of every block in backward."""
        for encoder in (
            self.transformer.video_encoder,
            self.transformer.image_encoder,
            self.transformer.image_decoder,
        ):
            for block in encoder.blocks:
                for flag in ("attn_checkpointing", "mlp_checkpointing"):
                    if hasattr(block, flag):
                        setattr(block, flag, True)

    def save_lora_weights(self, output_dir, transformer: nn.Module) -> None:
        """Writes `pytorch_lora_weights.safetensors` in diffusers' layout; `load_nova_lora` reads it."""
        save_nova_lora(transformer, output_dir)

    def load_lora_weights(self, input_dir, transformer: nn.Module) -> None:
        state_dict, _ = read_nova_lora(input_dir)
        self._set_lora_state(transformer, state_dict, f"{input_dir}/{LORA_WEIGHT_NAME}")

    # --- Validation -------------------------------------------------------------------------------------------

    def pipeline(self, transformer: nn.Module):
        """A `NOVAPipeline` around the live `transformer` (its sampler in eval mode)."""
        for block in unwrap_model(transformer).video_encoder.blocks:
            block.attn.attn_mask = None  # NOVA's training forward leaves its causal training mask there
        return self.spec.pipeline_class(
            transformer=transformer,
            scheduler=type(self.scheduler).from_config(self.scheduler.config),
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
        )
