"""VideoMAE and VideoMAEv2 teachers through transformers' `VideoMAEModel` (the paper's teacher family)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .base import TeacherInput, VideoTeacher, patch_sizes


# Adapted from VideoREPA's finetune/models/cogvideox_t2v_align/models/ssl/VideoMAEv2.py (`interpolate_pos_embed`).
def interpolate_position_table(
    table: torch.Tensor, source_grid: tuple[int, int, int], target_grid: tuple[int, int, int]
) -> torch.Tensor:
    """Resizes a position table to another token grid: bicubic in space, then linear in time.

    Args:
        table (`torch.Tensor`): `(1, F * H * W, C)` in `(f, h, w)` order, for `source_grid = (F, H, W)`.
        source_grid (`tuple[int, int, int]`): the grid the table was made for.
        target_grid (`tuple[int, int, int]`): the grid wanted.

    Returns:
        `torch.Tensor`: `(1, F' * H' * W', C)` for `target_grid = (F', H', W')`; `table` itself when the grids match.
    """
    if tuple(source_grid) == tuple(target_grid):
        return table
    (f, h, w), (new_f, new_h, new_w) = source_grid, target_grid
    grid = rearrange(table.float(), "1 (f h w) c -> f c h w", f=f, h=h, w=w)
    if (h, w) != (new_h, new_w):
        grid = F.interpolate(grid, size=(new_h, new_w), mode="bicubic", align_corners=False)
    series = rearrange(grid, "f c h w -> 1 (c h w) f")
    if f != new_f:
        series = F.interpolate(series, size=new_f, mode="linear", align_corners=False)
    return rearrange(series, "1 (c h w) f -> 1 (f h w) c", h=new_h, w=new_w).to(table.dtype)


class VideoMAETeacher(VideoTeacher):
    """A transformers `VideoMAEModel` (VideoMAE, or VideoMAEv2 after `convert_videomaev2`) as a teacher.

    The model is set up for `input`: its fixed sinusoidal position table, made for the checkpoint's native grid
    (e.g. 8 x 14 x 14 for 16 frames at 224x224), is resized to the input's grid with `interpolate_position_table`
    (e.g. 24 x 10 x 15 for 48 frames at 160x240), and its final norm, if any, is removed.

    Args:
        model (`transformers.VideoMAEModel`): the backbone; this teacher takes ownership and changes it in place.
        name (`str`): checkpoint name or path.
        input (`TeacherInput`): frames and size the teacher sees.
    """

    backbone_class = "VideoMAEModel"  # pretraining and classification checkpoints give their encoder
    weight_prefixes = ("embeddings.", "encoder.")

    def __init__(self, model, *, name: str, input: TeacherInput):
        super().__init__(model, name=name, input=input, **patch_sizes(model.config))
        config = model.config
        image_size = config.image_size if isinstance(config.image_size, (list, tuple)) else [config.image_size] * 2
        native = (config.num_frames // config.tubelet_size, *(size // config.patch_size for size in image_size))
        embeddings = model.embeddings
        embeddings.position_embeddings = interpolate_position_table(embeddings.position_embeddings, native, self.grid)
        embeddings.patch_embeddings.image_size = (input.height, input.width)
        embeddings.num_patches = embeddings.patch_embeddings.num_patches = embeddings.position_embeddings.shape[1]
        config.image_size, config.num_frames = [input.height, input.width], input.num_frames
        model.layernorm = None  # the last block's output, as VideoREPA reads it

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=pixels).last_hidden_state
