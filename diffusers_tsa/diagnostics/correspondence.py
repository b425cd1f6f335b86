"""Correspondence maps of a few query tokens (paper Fig. 1 and 3): P_{i,f} = softmax(R_{i,f} / tau) over the H*W keys
of every frame f (Eq. 6-8), at one or several temperatures."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from ..errors import GridError, UsageError
from ..relations import EPS


@torch.no_grad()
def correspondence_maps(
    features: torch.Tensor, queries: torch.Tensor, *, tau: float | Sequence[float] = 0.1
) -> torch.Tensor:
    """Correspondence distributions of a few query tokens over every frame (Eq. 6-8, paper Fig. 1 and 3).

    For each query token i and frame f, `P_{i,f} = softmax(R_{i,f} / tau)` over the H*W keys of frame f, with
    `R_i = Ē_i Ē^T` the cosine similarities of L2-normalised features, in fp32, as `tsa_loss` computes them. Only the
    queries' rows of R are built: `(Q, N)` relations.

    Args:
        features (`torch.Tensor`): one sample's features, shape `(F, H, W, C)` (teacher, or projected student).
        queries (`torch.Tensor`): flat token indices `(Q,)` (see `query_tokens`).
        tau (`float` or `Sequence[float]`, defaults to 0.1): one temperature, or several (paper Fig. 3: lower is
            sharper, from object- to point-level correspondences).

    Returns:
        `torch.Tensor`: fp32 probabilities of shape `(Q, F, H, W)` for one temperature, `(T, Q, F, H, W)` for a
        sequence of T; each `[..., q, f, :, :]` sums to 1.
    """
    if features.ndim != 4:
        raise GridError(f"`features` must be one sample's grid (F, H, W, C), got shape {tuple(features.shape)}.")
    temperatures = [tau] if isinstance(tau, (int, float)) else list(tau)
    if not temperatures or min(temperatures) <= 0:
        raise UsageError(f"`tau={tau}` must be positive temperatures.")
    num_frames, height, width = features.shape[:3]
    tokens = F.normalize(rearrange(features.float(), "f h w c -> (f h w) c"), dim=-1, eps=EPS)
    relations = rearrange(tokens[queries.to(tokens.device)] @ tokens.T, "q (f k) -> q f k", f=num_frames)  # Eq. 6-7
    maps = torch.stack([(relations / t).softmax(-1) for t in temperatures])  # Eq. 8
    maps = rearrange(maps, "t q f (h w) -> t q f h w", h=height, w=width)
    return maps[0] if isinstance(tau, (int, float)) else maps
