"""Which tokens to look at: the frames a teacher sees of a clip, the most dynamic tokens of one of its frames (the
M-TSA saliency, paper Eq. 11-12), and the flat indices of `(f, h, w)` query positions on a token grid."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ..errors import GridError
from ..masking import motion_saliency_mask
from ..teachers import TeacherInput, VideoTeacher


Grid = tuple[int, int, int]


def teacher_frames(video: torch.Tensor, input: TeacherInput, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The frames a teacher with `input` sees of `video` (`VideoTeacher.prepare`: the same selection), at its input
    size or at `size`, e.g. the clip's own, for display. Reads no weight.

    Args:
        video (`torch.Tensor`): clips in [-1, 1] of shape `(B, T, C, H, W)`.
        input (`TeacherInput`): what the teacher sees (`teacher.input`, or `TeacherInput.for_clip(...)`).
        size (`tuple[int, int]`, *optional*): `(height, width)` of the returned frames; `None` is the teacher's.

    Returns:
        `torch.Tensor`: `(B, input.num_frames, C, height, width)` in [-1, 1].
    """
    if size is not None:
        input = dataclasses.replace(input, height=size[0], width=size[1])
    # `prepare` reads only the input; patch 1 accepts any display size.
    selector = VideoTeacher(nn.Identity(), name="frames", input=input, patch_size=1, tubelet_size=1, hidden_size=1)
    return selector.prepare(video)


def salient_queries(frames: torch.Tensor, tubelet: tuple[int, int, int], *, frame: int, k: int) -> list[Grid]:
    """The `k` most dynamic tokens of token frame `frame` (Eq. 11-12, ranked by motion), as `(f, h, w)` queries.

    Args:
        frames (`torch.Tensor`): the frames the teacher sees, `(T, C, H, W)` (`teacher_frames` or `teacher.prepare`).
        tubelet (`tuple[int, int, int]`): the teacher's `(Pt, Ph, Pw)`.
        frame (`int`): token frame of the queries.
        k (`int`): number of queries, at most the tokens of a frame.

    Returns:
        `list[tuple[int, int, int]]`: `(frame, h, w)` tokens in row-major order.
    """
    _, _, height, width = frames.shape
    tokens_per_frame = (height // tubelet[1]) * (width // tubelet[2])
    if not 1 <= k <= tokens_per_frame:
        raise GridError(f"`top_k={k}` must be in [1, {tokens_per_frame}], the tokens of one teacher frame.")
    mask = motion_saliency_mask(frames[None], tubelet=tubelet, ratio=k / tokens_per_frame)[0]  # exactly k a frame
    if not 0 <= frame < mask.shape[0]:
        raise GridError(f"`query_frame={frame}` must be a teacher token frame in [0, {mask.shape[0] - 1}].")
    return [(frame, h, w) for h, w in mask[frame].nonzero().tolist()]


def query_tokens(grid: Grid, positions: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """Flat token indices `f * H * W + h * W + w` of query positions on a `(F, H, W)` grid.

    Args:
        grid (`tuple[int, int, int]`): the token grid `(F, H, W)`.
        positions (`Sequence[tuple[int, int, int]]`): query tokens as `(f, h, w)`.

    Returns:
        `torch.Tensor`: long indices of shape `(Q,)`.

    Raises:
        `GridError`: for a position outside the grid, naming it.
    """
    num_frames, height, width = grid
    if not positions:
        raise GridError("Pass at least one query position (f, h, w).")
    outside = [p for p in positions if not all(0 <= v < n for v, n in zip(p, grid))]
    if outside:
        raise GridError(
            f"`query={outside[0]}` must be a token (f, h, w) of the {tuple(grid)} grid: "
            f"0 <= f < {num_frames}, 0 <= h < {height}, 0 <= w < {width}."
        )
    return torch.tensor([(f * height + h) * width + w for f, h, w in positions], dtype=torch.long)
