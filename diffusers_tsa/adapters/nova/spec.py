"""NOVA's checkpoint as read from its configs: shape rules, checks, and the stock `NOVAPipeline` (package `diffnext`).

NOVA (BAAI, github.com/baaivision/NOVA) predicts each latent frame from the previous ones: a `video_encoder` turns
frames < t (a BOS frame for t = 0) into a prefix, an `image_encoder` reads that prefix and the masked tokens of frame
t, and a per-token MLP head (`image_decoder`) is trained with flow matching on the masked tokens.

Alignment features are the output of `image_encoder.blocks[depth - 1]`. The first `encoder_depth` blocks (half of
them) see only the prefix and the visible tokens, so only blocks from `encoder_depth + 1` on (1-based) carry the full
video grid: that is `min_depth`. For `BAAI/nova-d48w1024-osp480` (33 frames at 480x768, latents 9 x 60 x 96) the grid
is 9 x 30 x 48, depth in [17, 32], width 1024.

`diffnext` is imported lazily, from the checkpoint's `model_index.json` entries; it is not on PyPI (see
`DIFFNEXT_INSTALL`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ...errors import GridError, ModelLayoutError
from ..options import GenerationSettings, TrainingOptions
from ..spec import Grid, ModelSpec


DIFFNEXT_INSTALL = (
    "NOVA models need NOVA's `diffnext` package, which is not on PyPI. Install it from NOVA's public repository:\n"
    "    git clone https://github.com/baaivision/NOVA && pip install ./NOVA"
)


def import_diffnext(module: str) -> ModuleType:
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
    `image_size` (height, width) pixels; prompts of `text_token_len` tokens (its `text_embed`'s). `transformer_module`
    is the `(module, class)` entry of `model_index.json`."""

    family = "nova"
    pipeline_class_name = "NOVAPipeline"
    fps = 12
    usage_imports = ("diffnext.pipelines", "diffnext.utils")
    usage_dtype = "float16"  # as NOVA's own examples load it
    #: `NOVAPipeline` has no `load_lora_weights`: the card's code loads the LoRA with `load_nova_lora`.
    usage_lora_loader = ("diffusers_tsa.adapters.nova", "load_nova_lora")

    image_size: tuple[int, int] = (480, 768)
    vae_scale: int = 8
    temporal_compression: int = 4
    patch_size: int = 2
    tile_frames: int = 0
    rotary_pos_embed: bool = False
    text_token_len: int = 256
    transformer_module: tuple[str, str] = ("diffnext.models.transformers.transformer_nova", "NOVATransformer3DModel")

    @classmethod
    def from_configs(cls, pretrained_model_name_or_path, model_index, *, revision=None, cache_dir=None) -> NOVASpec:
        """Builds the transformer and the VAE from their configs on the meta device (no weight is read or
        allocated) and reads the block layout and the VAE's compression from them."""
        modules = {}
        for name in ("transformer", "vae"):
            library, class_name = model_index[name]
            model_class = getattr(import_diffnext(library), class_name)
            config = model_class.load_config(
                pretrained_model_name_or_path, subfolder=name, revision=revision, cache_dir=cache_dir
            )
            with torch.device("meta"):
                modules[name] = model_class.from_config(config)
        transformer, vae = modules["transformer"], modules["vae"]
        probe_frames = 17  # one VAE tile: 4k+1 frames for any causal video VAE
        latents = vae.encode(torch.empty(1, vae.config.in_channels, probe_frames, 64, 64, device="meta"))
        latent_frames, latent_size = latents.latent_dist.mean.shape[2], latents.latent_dist.mean.shape[-1]
        encoder, config = transformer.image_encoder, transformer.config
        image_size = config.image_size
        return cls(
            pretrained_model_name_or_path=pretrained_model_name_or_path,
            num_blocks=len(encoder.blocks),
            hidden_size=encoder.embed_dim,
            min_depth=encoder.encoder_depth + 1,
            revision=revision,
            cache_dir=cache_dir,
            image_size=tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size),
            vae_scale=64 // latent_size,
            temporal_compression=(probe_frames - 1) // (latent_frames - 1),
            patch_size=encoder.patch_embed.patch_size,
            tile_frames=getattr(vae, "sample_min_t", 0),
            rotary_pos_embed=bool(config.get("rotary_pos_embed", False)),
            text_token_len=transformer.text_embed.num_tokens,
            transformer_module=tuple(model_index["transformer"]),
        )

    @property
    def default_max_sequence_length(self) -> int:
        """NOVA's prompts have the length its text embedding was trained with (`text_token_len`)."""
        return self.text_token_len

    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        pixels = self.vae_scale * self.patch_size
        return ((num_frames - 1) // self.temporal_compression + 1, height // pixels, width // pixels)

    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        bad, tc, tile = [], self.temporal_compression, self.tile_frames
        if (num_frames - 1) % tc:
            k = (num_frames - 1) // tc
            bad.append(f"`num_frames={num_frames}` must be {tc}k+1 (e.g. {tc * k + 1} or {tc * (k + 1) + 1})")
        elif tile and num_frames > tile and (num_frames - 1) % (tile - 1):
            m = (num_frames - 1) // (tile - 1)
            bad.append(
                f"`num_frames={num_frames}`: the VAE encodes clips longer than {tile} frames in tiles of "
                f"{tile}, so it must be {tile - 1}m+1 (e.g. {(tile - 1) * m + 1} or {(tile - 1) * (m + 1) + 1})"
            )
        if not self.rotary_pos_embed and (height, width) != tuple(self.image_size):
            bad.append(
                f"`height={height}`, `width={width}` must be {self.image_size[0]} and {self.image_size[1]} "
                "(this NOVA model's position table is fixed to that size)"
            )
        pixels = self.vae_scale * self.patch_size * 2  # the video encoder's patch is twice the image patch
        for name, value in (("height", height), ("width", width)):
            if self.rotary_pos_embed and (value % pixels or value < pixels):
                bad.append(f"`{name}={value}` must be a multiple of {pixels}")
        if bad:
            raise GridError("NOVA cannot take this clip size: " + "; ".join(bad) + ".")

    def check_depth(self, depth: int) -> None:
        if not self.min_depth <= depth <= self.num_blocks:
            raise ModelLayoutError(
                f"`depth={depth}` is out of range for this NOVA model: it must be in [{self.min_depth}, "
                f"{self.num_blocks}]. Depth d aligns the output of `image_encoder.blocks[d - 1]`; its first "
                f"{self.min_depth - 1} blocks see only the unmasked tokens, so they have no full video grid."
            )

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """NOVA's VAE always encodes long clips in tiles of frames and has no slicing switch; its pipeline has no
        dynamic guidance, and its prompts have the length its text encoder was trained with."""
        super().check_options(training=training)
        bad = [f"`{name}=True`" for name, value in (("vae_slicing", vae_slicing), ("vae_tiling", vae_tiling)) if value]
        if use_dynamic_cfg:
            bad.append("`use_dynamic_cfg=True`")
        if training.max_sequence_length not in (None, self.text_token_len):
            bad.append(f"`max_sequence_length={training.max_sequence_length}`")
        if bad:
            raise ModelLayoutError(
                f"{', '.join(bad)}: not supported by NOVA (its VAE has no slicing or tiling switch, its pipeline no "
                "dynamic guidance, its prompts a fixed length); drop it."
            )

    @property
    def pipeline_class(self) -> type:
        return import_diffnext("diffnext.pipelines").NOVAPipeline

    @property
    def transformer_class(self) -> type:
        library, class_name = self.transformer_module
        return getattr(import_diffnext(library), class_name)

    def _load_lora(self, pipe, lora, *, weight_name, scale) -> None:
        """`NOVAPipeline` has no `load_lora_weights`: the LoRA goes in with `load_nova_lora`."""
        from .lora import LORA_WEIGHT_NAME, load_nova_lora

        load_nova_lora(pipe.transformer, lora, weight_name=weight_name or LORA_WEIGHT_NAME, scale=scale)

    @property
    def usage_transformer(self) -> tuple[str, str]:
        """The `transformer` entry of the checkpoint's `model_index.json` (no `diffnext` import needed)."""
        return self.transformer_module

    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """NOVA generates at its configured size: only the number of latent frames is chosen."""
        return {
            "max_latent_length": self.token_grid(settings.num_frames, settings.height, settings.width)[0],
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
        }

    def generate(self, pipe, prompt, settings, generator=None, image=None) -> np.ndarray:
        """`NOVAPipeline` returns uint8 frames; these are float32 in [0, 1], as other families return them."""
        return super().generate(pipe, prompt, settings, generator, image).astype(np.float32) / 255.0
