"""The projector h_psi (paper Eq. 5): diffusion tokens -> the teacher's feature space and token grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from .choices import PROJECTOR_HEADS
from .errors import GridError


Grid = tuple[int, int, int]

#: Folder of a training output (and of each checkpoint) that holds the projector, beside the transformer weights.
PROJECTOR_SUBFOLDER = "alignment_projector"
#: The files `save_pretrained` writes there.
PROJECTOR_FILES = (f"{PROJECTOR_SUBFOLDER}/config.json", f"{PROJECTOR_SUBFOLDER}/diffusion_pytorch_model.safetensors")


@dataclass(frozen=True)
class GridResampling:
    """How a student token grid (F_s, H_s, W_s) reaches a teacher grid (F_t, H_t, W_t).

    Optionally the first student frame is dropped (a causal video VAE encodes the first pixel frame alone into
    latent frame 0, which has no teacher tubelet when the teacher skips that frame); then each axis is either
    upsampled by an integer factor (trilinear interpolation) or downsampled by an integer factor (a strided
    convolution whose kernel equals its stride). For CogVideoX with the paper's teacher, 13 x 30 x 45 ->
    24 x 10 x 15: drop frame 0, x2 in time, /3 in space, as VideoREPA does.

    The general path, for spatial sizes with no integer ratio (Wan at 480x832 has 52 tokens across; a teacher at
    272 px has 17): each such axis of `s` student tokens and `t` teacher tokens is first resized by linear
    interpolation to the nearest multiple of `t`, `m = k t` with `k = max(1, round(s / t))` (52 -> 51, always
    within half a teacher token of `s`), then the strided convolution downsamples it by `k` (51 -> 17). A
    convolution window thus still covers about `s / t` student tokens, as on the integer path, and its weights stay
    learned; axes with an integer ratio are resized by the same factors as on the integer path. When every axis has
    an integer ratio, the integer path is used unchanged (`resize is None`). Time has no general path: a latent
    frame and a teacher tubelet cover exact spans of pixel frames, and any teacher frame count can be chosen to pair
    them, so frames must pair exactly.
    """

    drop_first_frame: bool
    upsample: Grid
    downsample: Grid
    #: The size the MLP output is linearly resized to when some axis has no integer ratio (the general path).
    resize: Grid | None = None

    @staticmethod
    def pairs(student: int, teacher: int) -> bool:
        """Whether one axis of `student` and `teacher` sizes has an integer up- or downsampling factor."""
        return student >= 1 and (student % teacher == 0 or teacher % student == 0)

    @classmethod
    def between(cls, student_grid: Grid, teacher_grid: Grid, drop_first_frame: bool | None = None) -> "GridResampling":
        """Derives the resampling, or raises `GridError` saying why the pair is not supported.

        Args:
            student_grid (`tuple[int, int, int]`): (F_s, H_s, W_s).
            teacher_grid (`tuple[int, int, int]`): (F_t, H_t, W_t).
            drop_first_frame (`bool`, *optional*): force dropping (True) or keeping (False) the first student
                frame; `None` keeps it when the frame counts have an integer ratio and drops it otherwise.
        """
        if len(student_grid) != 3 or len(teacher_grid) != 3 or min(*student_grid, *teacher_grid) < 1:
            raise GridError(
                f"Grids must be three positive sizes (F, H, W); got student {student_grid}, teacher {teacher_grid}."
            )
        choices = [drop_first_frame] if drop_first_frame is not None else [False, True]
        usable = [drop for drop in choices if student_grid[0] - drop >= 1]
        if not usable:
            raise GridError(
                f"The student grid {tuple(student_grid)} has one frame: dropping it (`drop_first_frame=True`) leaves "
                "none to align; use a longer clip."
            )
        in_time = [drop for drop in usable if cls.pairs(student_grid[0] - drop, teacher_grid[0])]
        for drop in in_time:
            sizes = (student_grid[0] - drop, *student_grid[1:])
            if all(cls.pairs(s, t) for s, t in zip(sizes, teacher_grid)):
                up = tuple(max(1, t // s) for s, t in zip(sizes, teacher_grid))
                down = tuple(max(1, s // t) for s, t in zip(sizes, teacher_grid))
                return cls(drop, up, down)
        if in_time:  # the general path, in space only
            sizes = (student_grid[0] - in_time[0], *student_grid[1:])
            down = tuple(max(1, round(s / t)) for s, t in zip(sizes, teacher_grid))
            return cls(in_time[0], (1, 1, 1), down, tuple(k * t for k, t in zip(down, teacher_grid)))
        reasons = [
            f"{'dropping' if drop else 'keeping'} the first frame leaves {student_grid[0] - drop} frames"
            for drop in usable
        ]
        raise GridError(
            f"Cannot resample the student grid {tuple(student_grid)} to the teacher grid {tuple(teacher_grid)}: "
            + "; ".join(reasons)
            + f", with no integer ratio to the teacher's {teacher_grid[0]} on F. Frames must pair exactly (each "
            "teacher tubelet with whole latent frames, or the reverse): change `TeacherInput.num_frames` or the clip."
        )


# Adapted from VideoREPA's projector (finetune/models/cogvideox_t2v_align/models/cogvideox_align.py) and its resampling
# to the teacher grid (lora_trainer.py), with every shape derived from the two grids instead of hard-coded.
class AlignmentProjector(ModelMixin, ConfigMixin):
    """A 3-layer MLP followed by a 3D convolutional resampler, from diffusion tokens to teacher tokens (VideoREPA's
    form), or a LayerNorm and one Linear followed by a resize (SimpleTuner's CREPA form).

    The `"mlp"` head (Linear-SiLU-Linear-SiLU-Linear) maps the hooked block's width to the teacher's; the resampler,
    derived from the two grids by `GridResampling`, brings the student's token grid to the teacher's. The
    `"layernorm_linear"` head (LayerNorm-Linear) maps the width, then the tokens are resized to the teacher grid by
    trilinear interpolation (no weights; SimpleTuner interpolates both sides to the smaller grid instead, where this
    always reaches the teacher's); the first frame is dropped as `GridResampling` says. A diffusers model:
    `save_pretrained` writes its weights and its config (widths, grids, head), `from_pretrained` rebuilds it.

    Args:
        in_dim (`int`): width of the diffusion model's hidden states (1920 for CogVideoX-2B).
        out_dim (`int`): width of the teacher's features (768 for a ViT-B).
        student_grid (`tuple[int, int, int]`): the student's token grid (F_s, H_s, W_s), e.g. (13, 30, 45).
        teacher_grid (`tuple[int, int, int]`): the teacher's token grid (F_t, H_t, W_t), e.g. (24, 10, 15).
        hidden_dim (`int`, defaults to 2048): width of the MLP's hidden layers.
        drop_first_frame (`bool`, *optional*): see `GridResampling.between`.
        head (`str`, defaults to `"mlp"`): one of `PROJECTOR_HEADS`; `hidden_dim` is the `"mlp"` head's alone.
    """

    @register_to_config
    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        student_grid: Grid,
        teacher_grid: Grid,
        hidden_dim: int = 2048,
        drop_first_frame: bool | None = None,
        head: str = "mlp",
    ):
        super().__init__()
        if head not in PROJECTOR_HEADS:
            raise GridError(f"`head={head!r}` must be one of {PROJECTOR_HEADS}.")
        self.student_grid = tuple(student_grid)
        self.teacher_grid = tuple(teacher_grid)
        self.resampling = GridResampling.between(self.student_grid, self.teacher_grid, drop_first_frame)
        if head == "layernorm_linear":
            self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))
            self.resample = None
            return
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, out_dim),
        )
        down = self.resampling.downsample
        self.resample = nn.Conv3d(out_dim, out_dim, kernel_size=down, stride=down)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Projects hooked hidden states onto the teacher grid.

        Args:
            hidden_states (`torch.Tensor`): `(B, F_s * H_s * W_s, in_dim)` video tokens in frame-major order.

        Returns:
            `torch.Tensor`: `(B, F_t, H_t, W_t, out_dim)`, contiguous.
        """
        f, h, w = self.student_grid
        if hidden_states.ndim != 3 or hidden_states.shape[1] != f * h * w:
            raise GridError(
                f"The projector expects (B, {f * h * w}, C) tokens for the student grid {self.student_grid}, got "
                f"{tuple(hidden_states.shape)}; check the training resolution and the hooked block."
            )
        x = rearrange(hidden_states, "b (f h w) c -> b f h w c", f=f, h=h, w=w)
        if self.resampling.drop_first_frame:
            x = x[:, 1:]
        x = rearrange(self.mlp(x), "b f h w c -> b c f h w")
        if self.resample is None:  # the layernorm_linear head
            if tuple(x.shape[2:]) != self.teacher_grid:
                x = F.interpolate(x, size=self.teacher_grid, mode="trilinear", align_corners=False)
            return rearrange(x, "b c f h w -> b f h w c").contiguous()
        if self.resampling.resize is not None:  # the general path
            x = F.interpolate(x, size=self.resampling.resize, mode="trilinear", align_corners=False)
        elif self.resampling.upsample != (1, 1, 1):
            x = F.interpolate(x, scale_factor=self.resampling.upsample, mode="trilinear", align_corners=False)
        x = self.resample(x)
        # A fresh tensor rather than a permuted view: FSDP2 hooks a module's output for its backward, which an
        # in-place op on a view would bypass (the token rows the losses take are a copy anyway).
        return rearrange(x, "b c f h w -> b f h w c").contiguous()
