"""Test double of NOVA's `NOVATransformer3DModel` (see the package docstring for what it reproduces)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.attn_mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.attn_mask)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Block(nn.Module):
    """Post-norm residual block that adds in place, as NOVA's `vision_transformer.Block`."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = (
            nn.LayerNorm(dim),
            nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)),
        )
        self.attn_checkpointing = self.mlp_checkpointing = False

    def _part(self, name: str, x: torch.Tensor) -> torch.Tensor:
        norm, layer = (self.norm1, self.attn) if name == "attn" else (self.norm2, self.mlp)
        if getattr(self, f"{name}_checkpointing") and x.requires_grad:
            return checkpoint(lambda h: norm(layer(h)), x, use_reentrant=False)
        return norm(layer(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._part("attn", x).add_(x)
        return self._part("mlp", x).add_(x)


class PatchEmbed(nn.Module):
    def __init__(self, channels: int, dim: int, patch_size: int):
        super().__init__()
        self.patch_size, self.proj = patch_size, nn.Conv2d(channels, dim, patch_size, patch_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """`(N, C, H, W)` -> `(N, H/p * W/p, D)`, row-major."""
        return rearrange(self.proj(frames), "n d h w -> n (h w) d")


class VisionTransformer(nn.Module):
    def __init__(self, channels: int, dim: int, depth: int, num_heads: int, patch_size: int, num_tokens: int):
        super().__init__()
        self.embed_dim, self.encoder_depth = dim, depth // 2
        self.patch_embed = PatchEmbed(channels, dim, patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens `x` (N, L, D) after the prefix `c` (N, P, D); with `visible` (N, V) indices, the first
        `encoder_depth` blocks see only those tokens, the others see every token. Returns `(N, L, D)`."""
        prefix, x = c.shape[1], x + self.pos_embed
        split = self.encoder_depth if visible is not None else 0
        if split:
            index = visible[..., None].expand(-1, -1, x.shape[-1])
            h = torch.cat([c, x.gather(1, index)], 1)
            for block in self.blocks[:split]:
                h = block(h)
            c, x = h[:, :prefix], x.scatter(1, index, h[:, prefix:])
        h = torch.cat([c, x], 1)
        for block in self.blocks[split:]:
            h = block(h)
        return self.norm(h[:, prefix:])


class TextEmbed(nn.Module):
    """Prompt embeddings padded with the learned null rows of `weight`; a caption is dropped (10 %) in training."""

    def __init__(self, token_dim: int, dim: int, num_tokens: int, dropout: float = 0.1):
        super().__init__()
        self.num_tokens, self.dropout, self.encoders = num_tokens, dropout, []
        self.proj, self.norm = nn.Linear(token_dim, dim), nn.LayerNorm(dim)
        self.register_buffer("weight", torch.randn(512, token_dim) * 0.02)

    @torch.no_grad()
    def encode_prompts(self, prompts: list) -> torch.Tensor:
        null = self.weight[: self.num_tokens]
        if isinstance(prompts[0], str):
            tokenizer, encoder = self.encoders
            ids = tokenizer(
                prompts, padding="max_length", max_length=self.num_tokens, truncation=True, return_tensors="pt"
            )
            states = encoder(ids.input_ids.to(encoder.device)).last_hidden_state.to(null)
            prompts = [s[:n] for s, n in zip(states, ids.attention_mask.sum(1).tolist())]
        out = null.expand(len(prompts), -1, -1).clone()
        for i, p in enumerate(prompts):
            if not (self.training and np.random.rand() < self.dropout):
                out[i, : p.shape[0]] = p.to(out)
        return out

    def forward(self, prompts) -> torch.Tensor:
        x = self.encode_prompts(prompts) if isinstance(prompts, (list, tuple)) else prompts
        return self.norm(self.proj(x))


class MotionEmbed(nn.Module):
    def __init__(self, dim: int, base_flow: float = 5, base_fps: float = 12):
        super().__init__()
        self.base_flow, self.base_fps = base_flow, base_fps
        self.flow_proj, self.fps_proj = nn.Linear(1, dim), nn.Linear(1, dim)

    def forward(self, c: torch.Tensor, flow=None, fps=None) -> torch.Tensor:
        values = [
            torch.as_tensor([self.base_flow if f is None else f for f in (flow or [None] * len(c))]),
            torch.as_tensor([self.base_fps if f is None else f for f in (fps or [None] * len(c))]),
        ]
        embeds = [proj(v.to(c).view(-1, 1, 1).log1p()) for proj, v in zip((self.flow_proj, self.fps_proj), values)]
        return torch.cat(embeds, 1)


class MaskEmbed(nn.Module):
    def __init__(self, dim: int, mask_ratios: tuple[float, float] = (0.7, 1.0)):
        super().__init__()
        self.mask_ratios = mask_ratios
        self.bos_token, self.mask_token = nn.Parameter(torch.randn(1, dim) * 0.02), nn.Parameter(torch.randn(1, dim))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks one ratio of the tokens of `z` (N, L, D); returns the masked tokens, the mask (N, L, 1) and the
        visible indices (N, V)."""
        ratio = float(np.random.uniform(*self.mask_ratios))
        order = torch.rand(z.shape[:2], device=z.device).argsort(1)
        visible = order[:, : round((1 - ratio) * z.shape[1])]
        mask = z.new_ones(z.shape[:2] + (1,)).scatter(1, visible[..., None], 0)
        return z * (1 - mask) + self.mask_token * mask, mask, visible


class DiffusionHead(nn.Module):
    """Per-token flow-matching MLP conditioned on the image-encoder token and the timestep."""

    def __init__(self, token_dim: int, cond_dim: int, dim: int, depth: int):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
        self.inp, self.cond, self.time = nn.Linear(token_dim, dim), nn.Linear(cond_dim, dim), nn.Linear(1, dim)
        self.head = nn.Linear(dim, token_dim)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + self.cond(z) + self.time(sigma)
        for block in self.blocks:
            h = h + block(nn.functional.silu(h))
        return self.head(h)


class NOVATransformer3DModel(ModelMixin, ConfigMixin):
    """Test double of `diffnext.models.transformers.transformer_nova.NOVATransformer3DModel` (see module docstring).

    With the defaults it takes latents `(B, 4, T, 8, 12)` (64x96 pixels, VAE stride 8): image tokens 4 x 6 (patch 2),
    video-encoder tokens 2 x 3 (patch 4), as the real tiny model of `save_tiny_real_nova_pipeline`.
    """

    @register_to_config
    def __init__(
        self,
        image_dim: int = 4,
        image_size: tuple[int, int] = (64, 96),
        image_stride: int = 8,
        text_token_dim: int = 32,
        text_token_len: int = 8,
        rotary_pos_embed: bool = False,
        width: int = 32,
        depths: tuple[int, int, int] = (2, 4, 2),
        num_heads: int = 2,
    ):
        super().__init__()
        height, width_ = (s // image_stride for s in image_size)
        patch = 15 // image_stride + 1
        self.video_encoder = VisionTransformer(
            image_dim, width, depths[0], num_heads, 2 * patch, height * width_ // (4 * patch * patch)
        )
        self.image_encoder = VisionTransformer(
            image_dim, width, depths[1], num_heads, patch, height * width_ // (patch * patch)
        )
        self.image_decoder = DiffusionHead(image_dim * patch * patch, width, width, depths[2])
        self.mask_embed, self.motion_embed = MaskEmbed(width), MotionEmbed(width)
        self.text_embed = TextEmbed(text_token_dim, width, text_token_len)
        self.noise_scheduler = self.sample_scheduler = None
        self.loss_repeat = 4

    def _condition(self, inputs: dict) -> torch.Tensor:
        c = self.text_embed(inputs["prompt"])
        if inputs.get("motion_flow") is not None:
            c = torch.cat([c, self.motion_embed(c, inputs["motion_flow"], inputs.get("fps"))], 1)
        return c

    def _video_prefix(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Frame t's prefix: the video encoder's tokens of frames < t (a BOS frame for t = 0), `(B*T, P, D)`."""
        batch, frames = x.shape[0], x.shape[2]
        tokens = self.video_encoder.patch_embed(rearrange(x[:, :, :-1], "b c t h w -> (b t) c h w"))
        tokens = rearrange(tokens, "(b t) p d -> b t p d", b=batch)
        bos = self.mask_embed.bos_token.expand(batch, 1, tokens.shape[2], -1)
        tokens = torch.cat([bos, tokens], 1) + self.video_encoder.pos_embed[:, None]
        frame_of = torch.arange(frames, device=x.device).repeat_interleave(tokens.shape[2])
        frame_of = torch.cat([frame_of.new_zeros(c.shape[1]), frame_of])
        causal = torch.where(frame_of[:, None] >= frame_of[None], 0.0, float("-inf")).to(x.dtype)
        for block in self.video_encoder.blocks:
            block.attn.attn_mask = causal
        h = torch.cat([c, rearrange(tokens, "b t p d -> b (t p) d")], 1)
        for block in self.video_encoder.blocks:
            h = block(h)
        h = self.video_encoder.norm(h[:, c.shape[1] :])
        return rearrange(h, "b (t p) d -> (b t) p d", t=frames)

    def _patchify(self, frames: torch.Tensor) -> torch.Tensor:
        p = self.image_encoder.patch_embed.patch_size
        return rearrange(frames, "n c (h p) (w q) -> n (h w) (p q c)", p=p, q=p)

    def _unpatchify(self, tokens: torch.Tensor, height: int) -> torch.Tensor:
        p = self.image_encoder.patch_embed.patch_size
        return rearrange(tokens, "n (h w) (p q c) -> n c (h p) (w q)", h=height // p, p=p, q=p)

    def train_video(self, inputs: dict) -> dict[str, torch.Tensor]:
        x = inputs["x"]
        frames = x.shape[2]
        prefix = self._video_prefix(x, self._condition(inputs))
        images = rearrange(x, "b c t h w -> (b t) c h w")
        z, mask, visible = self.mask_embed(self.image_encoder.patch_embed(images))
        z = self.image_encoder(z, prefix, visible)
        target = self._patchify(images).repeat(self.loss_repeat, 1, 1)
        z, mask = z.repeat(self.loss_repeat, 1, 1), mask.repeat(self.loss_repeat, 1, 1)
        sigma = torch.rand(target.shape[:2] + (1,), device=x.device, dtype=x.dtype)
        noise = torch.randn_like(target)
        prediction = self.image_decoder(sigma * noise + (1 - sigma) * target, sigma, z)
        error = (prediction.float() - (noise - target).float()).pow(2).mean(-1, keepdim=True)
        per_frame = rearrange(
            error * mask / mask.sum().add(1e-5), "(r b t) n one -> t (r b n one)", t=frames, r=self.loss_repeat
        ).sum(1)
        return {"loss_t2i": per_frame[0] * frames, "loss_i2i": per_frame[1:].sum() * frames / (frames - 1)}

    @torch.no_grad()
    def generate_video(self, inputs: dict) -> torch.Tensor:
        c, steps = self._condition(inputs), inputs.get("num_diffusion_steps", 4)
        batch, frames = c.shape[0], inputs.get("max_latent_length", 1)
        channels, (height, width) = (
            self.config.image_dim,
            (s // self.config.image_stride for s in self.config.image_size),
        )
        x = torch.zeros(batch, channels, frames, height, width, device=c.device, dtype=c.dtype)
        for t in range(frames):
            prefix = rearrange(self._video_prefix(x[:, :, : t + 1], c), "(b t) p d -> b t p d", b=batch)[:, t]
            masked = self.mask_embed.mask_token.expand(batch, height * width // 4, -1)
            z = self.image_encoder(masked, prefix)
            sample = torch.randn(batch, height * width // 4, channels * 4, generator=inputs.get("generator"))
            sample = sample.to(c)
            for i in range(steps):
                sigma, next_sigma = 1 - i / steps, 1 - (i + 1) / steps
                velocity = self.image_decoder(sample, torch.full_like(sample[..., :1], sigma), z)
                sample = sample + (next_sigma - sigma) * velocity
            x[:, :, t] = self._unpatchify(sample, height)
        return x

    def forward(self, inputs: dict) -> dict[str, torch.Tensor]:
        if self.training:
            return self.train_video(inputs)
        return {"x": self.generate_video(inputs)}
