"""Test double of NOVA's `NOVAPipeline` (same constructor, `frames` as uint8 `(B, T, H, W, 3)`) and of
`diffnext.utils.export_to_video`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from einops import rearrange


@dataclass
class NOVAPipelineOutput(BaseOutput):
    frames: np.ndarray


class NOVAPipeline(DiffusionPipeline):
    """Test double of `diffnext.pipelines.NOVAPipeline`: same constructor, `frames` as uint8 `(B, T, H, W, 3)`."""

    def __init__(self, transformer, scheduler, vae, text_encoder, tokenizer):
        super().__init__()
        self.register_modules(
            transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer
        )
        self.transformer.sample_scheduler = scheduler
        self.transformer.text_embed.encoders = [tokenizer, text_encoder]

    @torch.no_grad()
    def __call__(
        self,
        prompt,
        max_latent_length: int = 1,
        num_diffusion_steps: int = 4,
        motion_flow: float = 5,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        **kwargs,
    ) -> NOVAPipelineOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        inputs = {
            "prompt": prompts,
            "motion_flow": [motion_flow] * len(prompts),
            "generator": generator,
            "max_latent_length": max_latent_length,
            "num_diffusion_steps": num_diffusion_steps,
        }
        latents = self.transformer(inputs)["x"]
        config = self.vae.config
        latents = latents.to(self.vae.dtype) / config.scaling_factor + (config.get("shift_factor") or 0)
        pixels = self.vae.decode(latents).sample
        frames = rearrange(pixels, "b c t h w -> b t h w c").mul(127.5).add(127.5).clamp(0, 255)
        return NOVAPipelineOutput(frames=frames.byte().cpu().numpy())


def export_to_video(video_frames, output_video_path: str, fps: int = 12) -> str:
    """Test double of `diffnext.utils.export_to_video`: writes uint8 frames `(H, W, 3)` with imageio, as NOVA's does."""
    import imageio

    with imageio.get_writer(output_video_path, fps=fps) as writer:
        for frame in video_frames:
            writer.append_data(frame)
    return output_video_path
