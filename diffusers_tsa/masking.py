"""Motion-saliency mask of M-TSA (paper Sec. 4.2, Eq. 11-12)."""

from __future__ import annotations

import torch
from einops import rearrange

from .errors import GridError


def motion_saliency_mask(
    video: torch.Tensor,
    *,
    tubelet: tuple[int, int, int] = (2, 16, 16),
    ratio: float = 0.2,
) -> torch.Tensor:
    """Selects the most dynamic tubelet tokens of each frame as M-TSA queries.

    The clip is cut into non-overlapping tubelets of size ``(Pt, Ph, Pw)`` (the teacher's patch grid), giving
    tokens ``Y`` of shape ``(F, H, W, C * Pt * Ph * Pw)``. The motion of token ``(t, h, w)`` is the L1 norm of
    ``Y[t] - Y[t - 1]``, with the first frame borrowing the second's (Eq. 11). In each frame the
    ``max(1, round(ratio * H * W))`` tokens of largest motion are kept (Eq. 12); ties go to the token that comes
    first in row-major (h, w) order, so the mask is deterministic on every device.

    Args:
        video (`torch.Tensor`): pixels of shape `(B, T, C, H', W')`, any range or dtype (uint8 included).
        tubelet (`tuple[int, int, int]`, defaults to `(2, 16, 16)`): tubelet size `(Pt, Ph, Pw)`; it must divide
            `(T, H', W')`.
        ratio (`float`, defaults to 0.2): share `k` of tokens kept per frame, in `(0, 1]`.

    Returns:
        `torch.Tensor`: bool mask of shape `(B, F, H, W)` with `F = T / Pt`, `H = H' / Ph`, `W = W' / Pw`;
        True marks a query token.
    """
    if video.ndim != 5:
        raise GridError(f"`video` must have shape (B, T, C, H, W), got a tensor of shape {tuple(video.shape)}.")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"`ratio` must be in (0, 1], got {ratio}.")
    pt, ph, pw = tubelet
    _, t, _, h, w = video.shape
    if t % pt or h % ph or w % pw:
        raise GridError(
            f"The tubelet {tuple(tubelet)} must divide the clip's (frames, height, width) = {(t, h, w)}; "
            f"use {t - t % pt} frames and a size of {h - h % ph}x{w - w % pw} (or a multiple of the tubelet)."
        )
    if t // pt < 2:
        raise GridError(
            f"Motion needs at least two tubelet frames, but {t} frames with a temporal tubelet of {pt} give "
            f"{t // pt}; pass at least {2 * pt} frames."
        )

    tokens = rearrange(video.float(), "b (f pt) c (h ph) (w pw) -> b f h w (pt ph pw c)", pt=pt, ph=ph, pw=pw)
    delta = (tokens[:, 1:] - tokens[:, :-1]).abs().sum(-1)  # Eq. 11, t >= 2
    delta = torch.cat([delta[:, :1], delta], dim=1)  # Eq. 11, Delta_1 = Delta_2

    num_frames, grid_h, grid_w = delta.shape[1:]
    k = max(1, round(ratio * grid_h * grid_w))
    flat = rearrange(delta, "b f h w -> b f (h w)")
    # A stable descending sort breaks ties by position, so top-k is reproducible (Eq. 12).
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices[..., :k]
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, order, True)
    return rearrange(mask, "b f (h w) -> b f h w", h=grid_h, w=grid_w)
