"""NOVA (BAAI's autoregressive video model, package `diffnext`) behind the `ModelAdapter` interface.

NOVA (design notes, section 6) predicts each latent frame from the previous ones: a `video_encoder` turns frames < t
(a BOS frame for t = 0) into a prefix, an `image_encoder` reads that prefix and the masked tokens of frame t, and a
per-token MLP head (`image_decoder`) is trained with flow matching on the masked tokens. Its training forward is
`transformer(inputs)` in train mode and returns `loss_t2i` (frame 0) and `loss_i2i` (later frames); NOVA's trainer
adds every output whose key contains "loss", and so does `diffusion_loss`.

Alignment features are the output of `image_encoder.blocks[depth - 1]`. The first `encoder_depth` blocks (half of
them) see only the prefix and the visible tokens, so only blocks from `encoder_depth + 1` on (1-based) carry the full
video grid: that is `min_depth`. Each of their outputs is `(B*T, P + h*w, D)`, the P video-encoder tokens of the
frame first; `alignment_tokens` strips them. For `BAAI/nova-d48w1024-osp480` (33 frames at 480x768, latents
9 x 60 x 96) the grid is 9 x 30 x 48, depth in [17, 32], width 1024.

`diffnext` is imported lazily, from the checkpoint's `model_index.json` entries and for `NOVAPipeline`; it is not on
PyPI (see `DIFFNEXT_INSTALL`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from einops import rearrange
from torch import nn

from ..errors import GridError, ModelLayoutError
from ..hooks import BlockFeatureExtractor, unwrap_model
from .base import Grid, ModelAdapter, ModelSpec

DIFFNEXT_INSTALL = (
    "NOVA models need NOVA's `diffnext` package, which is not on PyPI. Install it from NOVA's public repository:\n"
    "    git clone https://github.com/baaivision/NOVA && pip install ./NOVA"
)
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# The safetensors metadata key under which diffusers stores LoRA configs (rank, alpha, target modules).
_LORA_METADATA_KEY = "lora_adapter_metadata"
_LORA_PREFIX = "transformer."


def _import_module(module: str) -> ModuleType:
    """`importlib.import_module(module)`, with install instructions when it is (part of) a missing `diffnext`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] == "diffnext":
            raise ImportError(DIFFNEXT_INSTALL) from None
        raise


@dataclass(frozen=True)
class NOVASpec(ModelSpec):
    """NOVA's shape rules: a causal VAE (first frame alone, then `temporal_compression` frames per latent frame,
    clips longer than `tile_frames` encoded in tiles of that many frames overlapping by one), `vae_scale` pixels per
    latent pixel, `patch_size` latent pixels per image token, and without RoPE a position table fixed to
    `image_size` (height, width) pixels."""

    image_size: tuple[int, int] = (480, 768)
    vae_scale: int = 8
    temporal_compression: int = 4
    patch_size: int = 2
    tile_frames: int = 0
    rotary_pos_embed: bool = False

    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        pixels = self.vae_scale * self.patch_size
        return ((num_frames - 1) // self.temporal_compression + 1, height // pixels, width // pixels)

    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        bad, tc, tile = [], self.temporal_compression, self.tile_frames
        if (num_frames - 1) % tc:
            k = (num_frames - 1) // tc
            bad.append(f"--max_num_frames={num_frames} must be {tc}k+1 (e.g. {tc * k + 1} or {tc * (k + 1) + 1})")
        elif tile and num_frames > tile and (num_frames - 1) % (tile - 1):
            m = (num_frames - 1) // (tile - 1)
            bad.append(f"--max_num_frames={num_frames}: the VAE encodes clips longer than {tile} frames in tiles of "
                       f"{tile}, so it must be {tile - 1}m+1 (e.g. {(tile - 1) * m + 1} or {(tile - 1) * (m + 1) + 1})")
        if not self.rotary_pos_embed and (height, width) != tuple(self.image_size):
            bad.append(f"--height={height} --width={width} must be --height {self.image_size[0]} --width "
                       f"{self.image_size[1]} (this NOVA model's position table is fixed to that size)")
        pixels = self.vae_scale * self.patch_size * 2  # the video encoder's patch is twice the image patch
        for flag, value in (("--height", height), ("--width", width)):
            if self.rotary_pos_embed and (value % pixels or value < pixels):
                bad.append(f"{flag}={value} must be a multiple of {pixels}")
        if bad:
            raise GridError("NOVA cannot take this clip size: " + "; ".join(bad) + ".")

    def check_depth(self, depth: int) -> None:
        if not self.min_depth <= depth <= self.num_blocks:
            raise ModelLayoutError(
                f"--alignment_depth={depth} is out of range for this NOVA model: it must be in [{self.min_depth}, "
                f"{self.num_blocks}]. Depth d aligns the output of `image_encoder.blocks[d - 1]`; its first "
                f"{self.min_depth - 1} blocks see only the unmasked tokens, so they have no full video grid."
            )


class _CopyingBlockFeatureExtractor(BlockFeatureExtractor):
    """Captures a copy of the block's output: NOVA's blocks add residuals in place, so the copy guarantees that
    nothing run after the hook (now or in a later NOVA version) writes into the captured features."""

    def _hook(self, module: nn.Module, args, output) -> None:
        if self._active is not None:
            super()._hook(module, args, output.clone())


class NOVAAdapter(ModelAdapter):
    """`NOVAPipeline` checkpoints (e.g. `BAAI/nova-d48w1024-osp480`), trained with NOVA's own forward and losses.

    Text conditioning is the Phi-2 embedding of each caption, padded with NOVA's learned null rows as NOVA's
    `TextEmbed.encode_prompts` pads it; NOVA's 10 % caption dropout is applied in `diffusion_loss`. Clips are
    conditioned on NOVA's default motion (`motion_embed.base_flow`, 5, at its base 12 fps), the values
    `NOVAPipeline` generates with by default.
    """

    lora_target_modules = ["attn.qkv", "attn.proj"]

    def __init__(self, *, tokenizer, text_encoder, vae, transformer, scheduler, spec: NOVASpec, pipeline_class):
        self.pipeline_class = pipeline_class
        self.tokenizer, self.text_encoder, self.vae = tokenizer, text_encoder, vae
        self.transformer, self.scheduler, self.spec = transformer, scheduler, spec
        # NOVA trains with a fresh copy of its sampling scheduler (`build_diffusion_scheduler`): sampling mutates it.
        transformer.noise_scheduler = type(scheduler).from_config(scheduler.config)
        video_patch = transformer.video_encoder.patch_embed.patch_size
        self._image_tokens_per_prefix_token = (video_patch // transformer.image_encoder.patch_embed.patch_size) ** 2
        self._lora_config = None

    @staticmethod
    def _components(pretrained_model_name_or_path, **kwargs) -> dict[str, tuple[str, str]]:
        from diffusers import DiffusionPipeline

        index = DiffusionPipeline.load_config(pretrained_model_name_or_path, **kwargs)
        return {name: tuple(entry) for name, entry in index.items() if isinstance(entry, (list, tuple))}

    @classmethod
    def load_spec(cls, pretrained_model_name_or_path, *, revision=None, cache_dir=None) -> NOVASpec:
        """Builds the transformer and the VAE from their configs on the meta device (no weight is read or
        allocated) and reads the block layout and the VAE's compression from them."""
        kwargs = {"revision": revision, "cache_dir": cache_dir}
        components = cls._components(pretrained_model_name_or_path, **kwargs)
        modules = {}
        for name in ("transformer", "vae"):
            library, class_name = components[name]
            model_class = getattr(_import_module(library), class_name)
            config = model_class.load_config(pretrained_model_name_or_path, subfolder=name, **kwargs)
            with torch.device("meta"):
                modules[name] = model_class.from_config(config)
        transformer, vae = modules["transformer"], modules["vae"]
        probe_frames = 17  # one VAE tile: 4k+1 frames for any causal video VAE
        latents = vae.encode(torch.empty(1, vae.config.in_channels, probe_frames, 64, 64, device="meta"))
        latent_frames, latent_size = latents.latent_dist.mean.shape[2], latents.latent_dist.mean.shape[-1]
        encoder, config = transformer.image_encoder, transformer.config
        image_size = config.image_size
        return NOVASpec(
            family="nova",
            num_blocks=len(encoder.blocks),
            hidden_size=encoder.embed_dim,
            min_depth=encoder.encoder_depth + 1,
            image_size=tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size),
            vae_scale=64 // latent_size,
            temporal_compression=(probe_frames - 1) // (latent_frames - 1),
            patch_size=encoder.patch_embed.patch_size,
            tile_frames=getattr(vae, "sample_min_t", 0),
            rotary_pos_embed=bool(config.get("rotary_pos_embed", False)),
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *, revision=None, variant=None, cache_dir=None,
        weight_dtype=torch.float32, device="cpu",
    ) -> "NOVAAdapter":
        spec = cls.load_spec(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir)
        pipeline_class = _import_module("diffnext.pipelines").NOVAPipeline
        pipe = pipeline_class.from_pretrained(
            pretrained_model_name_or_path, revision=revision, variant=variant, cache_dir=cache_dir,
            torch_dtype=weight_dtype,
        )
        for module in (pipe.text_encoder, pipe.vae, pipe.transformer):
            module.requires_grad_(False).to(device)
        return cls(
            tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae, transformer=pipe.transformer,
            scheduler=pipe.scheduler, spec=spec, pipeline_class=pipeline_class,
        )

    @torch.no_grad()
    def encode_videos(self, videos: torch.Tensor) -> torch.Tensor:
        """`(B, T, C, H, W)` in [-1, 1] -> scaled latents `(B, C', F, H', W')`, as NOVA's `vae.scale_` scales them:
        `(z - shift_factor) * scaling_factor`."""
        pixels = rearrange(videos, "b t c h w -> b c t h w").to(self.vae.device, self.vae.dtype)
        latents = self.vae.encode(pixels).latent_dist.sample()
        config = self.vae.config
        return (latents - (config.get("shift_factor") or 0)) * config.scaling_factor

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Captions -> text-encoder states `(B, text_token_len, D_text)`: each caption's tokens, then NOVA's learned
        null rows (`text_embed.weight`) where it has none, exactly as `TextEmbed.encode_prompts` builds them."""
        text_embed = unwrap_model(self.transformer).text_embed
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=text_embed.num_tokens, truncation=True, return_tensors="pt"
        )
        states = self.text_encoder(tokens.input_ids.to(self.text_encoder.device)).last_hidden_state
        null = text_embed.weight[: text_embed.num_tokens]
        lengths = tokens.attention_mask.sum(1).to(null.device)
        has_token = torch.arange(text_embed.num_tokens, device=null.device)[None] < lengths[:, None]
        return torch.where(has_token[..., None], states.to(null), null)

    def diffusion_loss(self, transformer: nn.Module, latents: torch.Tensor, conditioning: torch.Tensor):
        """NOVA's training forward on latents `(B, C, F, H, W)` and text states `(B, L, D_text)`; returns its loss
        terms (`loss_t2i`, `loss_i2i`), every output whose key contains "loss", as NOVA's trainer sums them."""
        transformer.train()  # NOVA's forward is its training step in train mode, its sampler in eval mode
        inputs = {"x": latents, "prompt": list(conditioning)}  # as a list, NOVA drops 10 % of the captions
        motion_embed = unwrap_model(transformer).motion_embed
        if motion_embed is not None:
            inputs["motion_flow"] = [motion_embed.base_flow] * latents.shape[0]
        outputs = transformer(inputs)
        return {key: value for key, value in outputs.items() if "loss" in key}

    def feature_extractor(self, transformer: nn.Module, depth: int) -> BlockFeatureExtractor:
        """Hooks `image_encoder.blocks[depth - 1]`, keeping a copy of its output."""
        self.spec.check_depth(depth)
        return _CopyingBlockFeatureExtractor(transformer, module_path=f"image_encoder.blocks.{depth - 1}")

    def alignment_tokens(self, hidden_states: torch.Tensor, batch_size: int) -> torch.Tensor:
        """`(B*F, P + H*W, D)` image-encoder output -> `(B, F*H*W, D)` frame tokens, frame-major, without the P
        video-encoder tokens each frame's sequence starts with (the video patch covers 4 image patches)."""
        total, ratio = hidden_states.shape[1], self._image_tokens_per_prefix_token
        if total % (ratio + 1):
            raise ModelLayoutError(
                f"Expected NOVA image-encoder states of P video-encoder tokens then {ratio}P image tokens per frame, "
                f"got {total} tokens; is the hooked module an `image_encoder` block from depth {self.spec.min_depth}?"
            )
        frames = hidden_states[:, total // (ratio + 1):]
        return rearrange(frames, "(b f) n d -> b (f n) d", b=batch_size)

    # --- What trains and what is saved ------------------------------------------------------------------------

    def add_lora(self, rank: int, alpha: float) -> None:
        """LoRA (PEFT) on every attention projection of the video and image encoders (`attn.qkv`, `attn.proj`)."""
        from peft import LoraConfig, inject_adapter_in_model

        self._lora_config = LoraConfig(
            r=rank, lora_alpha=alpha, init_lora_weights=True, target_modules=self.lora_target_modules
        )
        inject_adapter_in_model(self._lora_config, self.transformer)

    def enable_full_training(self) -> None:
        """Trains every transformer weight except those NOVA's own trainer keeps frozen: the text embedding's
        LayerNorm and the motion embedding (`NOVATrainT2VPipeline.configure_model`)."""
        super().enable_full_training()
        frozen = [self.transformer.text_embed.norm, self.transformer.motion_embed]
        for module in filter(None, frozen):
            module.requires_grad_(False)

    def enable_gradient_checkpointing(self) -> None:
        """NOVA's own checkpointing: recompute the attention and MLP of every block in backward."""
        for encoder in (self.transformer.video_encoder, self.transformer.image_encoder, self.transformer.image_decoder):
            for block in encoder.blocks:
                for flag in ("attn_checkpointing", "mlp_checkpointing"):
                    if hasattr(block, flag):
                        setattr(block, flag, True)

    def save_lora_weights(self, output_dir, transformer: nn.Module) -> None:
        """Writes `pytorch_lora_weights.safetensors` in diffusers' layout (keys `transformer.<module>.lora_A...`,
        the LoRA config as `lora_adapter_metadata`); `load_nova_lora` reads it."""
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        config = unwrap_model(transformer).peft_config["default"].to_dict()
        config = {key: sorted(value) if isinstance(value, set) else value for key, value in config.items()}
        metadata = {"format": "pt", _LORA_METADATA_KEY: json.dumps(
            {_LORA_PREFIX + key: value for key, value in config.items()}, indent=2, sort_keys=True, default=str
        )}
        state_dict = get_peft_model_state_dict(unwrap_model(transformer))
        os.makedirs(output_dir, exist_ok=True)
        save_file({_LORA_PREFIX + k: v.contiguous() for k, v in state_dict.items()},
                  str(Path(output_dir) / LORA_WEIGHT_NAME), metadata=metadata)

    def load_lora_weights(self, input_dir, transformer: nn.Module) -> None:
        from peft.utils import set_peft_model_state_dict

        state_dict, _ = _read_lora(input_dir)
        result = set_peft_model_state_dict(unwrap_model(transformer), state_dict, adapter_name="default")
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"LoRA checkpoint in {input_dir} has unexpected keys: {result.unexpected_keys[:5]}")

    def configure_vae(self, *, slicing: bool = False, tiling: bool = False) -> None:
        """NOVA's VAE always encodes long clips in tiles of frames and has no slicing switch."""
        for flag, value in (("--enable_slicing", slicing), ("--enable_tiling", tiling)):
            if value:
                raise ValueError(f"{flag} is not supported by NOVA's VAE ({type(self.vae).__name__}); drop the flag.")

    # --- Validation -------------------------------------------------------------------------------------------

    def pipeline(self, transformer: nn.Module):
        """A `NOVAPipeline` around the live `transformer`, switched to eval mode (its sampler);
        `diffusion_loss` switches it back."""
        transformer.eval()
        for block in unwrap_model(transformer).video_encoder.blocks:
            block.attn.attn_mask = None  # NOVA's training forward leaves its causal training mask there
        return self.pipeline_class(
            transformer=transformer, scheduler=type(self.scheduler).from_config(self.scheduler.config), vae=self.vae,
            text_encoder=self.text_encoder, tokenizer=self.tokenizer,
        )

    def load_trained_pipeline(
        self, pretrained_model_name_or_path, output_dir, training_mode, *, revision=None, variant=None,
        cache_dir=None, dtype=torch.float32, device="cpu",
    ):
        """`NOVAPipeline.from_pretrained(base)` with `load_nova_lora(pipe.transformer, output_dir)` for LoRA, or with
        the fine-tuned `output_dir/transformer` for a full fine-tune."""
        if training_mode != "lora":
            return super().load_trained_pipeline(
                pretrained_model_name_or_path, output_dir, training_mode, revision=revision, variant=variant,
                cache_dir=cache_dir, dtype=dtype, device=device,
            )
        pipe = self.pipeline_class.from_pretrained(
            pretrained_model_name_or_path, revision=revision, variant=variant, cache_dir=cache_dir, torch_dtype=dtype
        )
        load_nova_lora(pipe.transformer, output_dir)
        pipe.transformer.eval()
        return pipe.to(device)

    def generation_kwargs(self, num_frames: int, height: int, width: int) -> dict[str, Any]:
        """NOVA generates at its configured size; only the number of latent frames is chosen."""
        return {"max_latent_length": self.spec.token_grid(num_frames, height, width)[0]}


def _read_lora(input_dir) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The transformer's LoRA state dict (PEFT keys) and LoRA config written by `NOVAAdapter.save_lora_weights`."""
    from safetensors import safe_open

    path = Path(input_dir) / LORA_WEIGHT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No {LORA_WEIGHT_NAME} in {input_dir}; pass the output_dir of a LoRA training run.")
    with safe_open(str(path), framework="pt") as f:
        metadata = json.loads((f.metadata() or {}).get(_LORA_METADATA_KEY, "{}"))
        state_dict = {k[len(_LORA_PREFIX):]: f.get_tensor(k) for k in f.keys() if k.startswith(_LORA_PREFIX)}
    config = {k[len(_LORA_PREFIX):]: v for k, v in metadata.items() if k.startswith(_LORA_PREFIX)}
    return state_dict, config


def load_nova_lora(transformer: nn.Module, input_dir: str | os.PathLike) -> nn.Module:
    """Adds the LoRA adapter trained by `train_text_to_video_tsa.py --model_family nova` to a NOVA transformer.

    Args:
        transformer (`NOVATransformer3DModel`): e.g. `NOVAPipeline.from_pretrained(base).transformer`.
        input_dir (`str` or `os.PathLike`): the training `output_dir` (holding `pytorch_lora_weights.safetensors`).

    Returns:
        The same `transformer`, with the adapter (rank and alpha from the file's metadata) active.

    Example:

    ```py
    pipe = NOVAPipeline.from_pretrained("BAAI/nova-d48w1024-osp480", torch_dtype=torch.float16)
    load_nova_lora(pipe.transformer, "nova-tsa-lora")
    ```
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import set_peft_model_state_dict

    state_dict, config = _read_lora(input_dir)
    if not config:
        raise ValueError(f"{Path(input_dir) / LORA_WEIGHT_NAME} has no LoRA config metadata (rank, alpha).")
    known = {field.name for field in dataclasses.fields(LoraConfig) if field.init}
    inject_adapter_in_model(LoraConfig(**{k: v for k, v in config.items() if k in known}), transformer)
    set_peft_model_state_dict(transformer, state_dict, adapter_name="default")
    return transformer
