"""V-JEPA 2 teachers through transformers' `VJEPA2Model` (encoder only, no predictor)."""

from __future__ import annotations

import torch

from .base import TeacherInput, VideoTeacher, patch_sizes


class _GridPositions:
    """3D RoPE position ids `(frame, row, column)` of every token of a `(F, H, W)` grid.

    transformers' `VJEPA2RopeAttention` derives them from the token index assuming a square
    `crop_size / patch_size` grid, which misplaces tokens of any other grid (160x240 included); this replaces it.
    """

    def __init__(self, grid: tuple[int, int, int]):
        _, height, width = grid
        index = torch.arange(grid[0] * height * width)
        self.ids = (index // (height * width), (index // width) % height, index % width)

    def __call__(self, hidden_states: torch.Tensor, masks: torch.Tensor | None = None):
        if masks is not None:
            raise NotImplementedError("Masked inputs are not used by teachers.")
        return tuple(ids.to(hidden_states.device) for ids in self.ids)


class VJEPA2Teacher(VideoTeacher):
    """The encoder of a transformers `VJEPA2Model` as a teacher (RoPE, so any grid works without a table).

    Its final norm is removed so `encode` returns the last block's output; its 3D RoPE is given the true
    `(F, H, W)` grid of the input, non-square ones included.

    Args:
        model (`transformers.VJEPA2Model`): the backbone; this teacher takes ownership and changes it in place.
        name (`str`): checkpoint name or path.
        input (`TeacherInput`): frames and size the teacher sees.
    """

    backbone_class = "VJEPA2Model"  # e.g. `facebook/vjepa2-vitl-fpc64-256`
    weight_prefixes = ("encoder.embeddings.", "encoder.layer.")  # not the predictor, nor the final norm

    def __init__(self, model, *, name: str, input: TeacherInput):
        super().__init__(model, name=name, input=input, **patch_sizes(model.config))
        model.encoder.layernorm = torch.nn.Identity()
        positions = _GridPositions(self.grid)
        for layer in model.encoder.layer:
            layer.attention.get_position_ids = positions

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.encoder(pixel_values_videos=pixels).last_hidden_state
