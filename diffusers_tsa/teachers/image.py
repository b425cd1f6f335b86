"""Image teachers: a transformers image backbone (DINOv2, DINOv2 with registers, DINOv3) run on each frame.

These are the teachers of REPA and CREPA; with them every alignment loss compares the student with per-frame
features, on the grid `(T, H / p, W / p)` of `T` frames at `H x W`, tubelet `(1, p, p)`.
"""

from __future__ import annotations

import torch
from einops import rearrange

from .base import TeacherInput, VideoTeacher, patch_sizes


class ImageTeacher(VideoTeacher):
    """A transformers image ViT as a teacher, run frame by frame on the frames `TeacherInput` picks.

    Each frame is encoded alone; its class and register tokens are dropped and its patch tokens kept, after the
    backbone's final norm: DINOv2's normalised patch tokens, the features REPA and CREPA align with. Position
    embeddings adapt to the input size inside the backbone (interpolated for DINOv2, RoPE for DINOv3).

    Args:
        model (`transformers.PreTrainedModel`): `Dinov2Model`, `Dinov2WithRegistersModel` or `DINOv3ViTModel`.
        name (`str`): checkpoint name or path.
        input (`TeacherInput`): frames and size the teacher sees.
    """

    backbone_class = "AutoModel"  # e.g. `facebook/dinov2-base`, `facebook/dinov2-with-registers-base`
    # Embeddings, blocks and final norm of DINOv2 (`encoder.`, `layernorm.`) and DINOv3 (`model.`, `norm.`); not a
    # classification head.
    weight_prefixes = ("embeddings.", "encoder.", "layernorm.", "model.", "norm.")

    def __init__(self, model, *, name: str, input: TeacherInput):
        super().__init__(model, name=name, input=input, **patch_sizes(model.config))
        self.num_prefix_tokens = 1 + getattr(model.config, "num_register_tokens", 0)  # class + registers

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        frames = rearrange(pixels, "b t c h w -> (b t) c h w")
        tokens = self.backbone(pixel_values=frames).last_hidden_state[:, self.num_prefix_tokens :]
        return rearrange(tokens, "(b t) n c -> b (t n) c", b=pixels.shape[0])
