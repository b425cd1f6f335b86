"""What the alignment does, in numbers and maps: how often the student's correspondences agree with the teacher's, and
the correspondence distributions of a few query tokens (paper Fig. 1 and 3).

- `alignment_agreement`: top-1 agreement and mean tempered KL over the queries of a batch (all tokens, or the M-TSA
  motion mask), streamed over the same tiles as `tsa_loss`, so it never holds a ``(queries x N)`` relation matrix.
- `correspondence_maps`: P_{i,f} = softmax(R_{i,f} / tau) over the H*W keys of every frame f (Eq. 6-8) for a few
  query tokens i, at one or several temperatures.
- `query_tokens`: flat token indices of `(f, h, w)` query positions, checked against the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import GridError, UsageError
from .losses import _EPS, _frame_rows, _query_indices, _TemperedKL, _Tiling, _token_rows


Grid = tuple[int, int, int]


@dataclass(frozen=True)
class Agreement:
    """How well student correspondences agree with the teacher's on the queries of a batch.

    With features `(B, F, H, W, C)` L2-normalised along C, `R = Ē Ē^T` (Eq. 6-7) and the query set `M_b` of sample b
    (all `N = F*H*W` tokens, or the M-TSA motion mask), each sample's pairs `(i, f)`, `i in M_b`, `f in 1..F`, are
    averaged and then the samples, exactly as `tsa_loss` weighs them (Eq. 9, 13):

        top1 = 1/B sum_b 1/(|M_b| F) sum_{i in M_b} sum_f [argmax_j R^s_{i,f,j} == argmax_j R^t_{i,f,j}]
        kl   = 1/B sum_b 1/(|M_b| F) sum_{i in M_b} sum_f KL(P^t_{i,f} || P^s_{i,f}),  P = softmax(R / tau)

    where `j` runs over the H*W keys of frame f. When every sample has as many queries (no mask, or any
    `motion_saliency_mask`), `top1` is the share of all `num_pairs` pairs whose arg-max keys agree. In the query's own
    frame both models find the query itself (cosine 1), so `top1` is at least about `1 / F` even for unrelated
    features; the later frames carry the signal.

    Attributes:
        top1 (`float`): top-1 agreement in [0, 1]; 1 when the student's most similar key in every frame is the
            teacher's.
        kl (`float`): the mean tempered KL, the value `tsa_loss` returns for the same features, `tau` and mask.
        num_pairs (`int`): `sum_b |M_b| F`, the (query, frame) pairs counted.
    """

    top1: float
    kl: float
    num_pairs: int


@torch.no_grad()
def alignment_agreement(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    tau: float = 0.1,
    query_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> Agreement:
    """Top-1 agreement and mean tempered KL between student and teacher correspondences (see `Agreement`).

    Takes exactly what `tsa_loss` takes and computes in fp32 over the same tiles (a chunk of queries against a chunk
    of key frames), so its memory stays bounded whatever the grid. Use it as a validation metric: at a fixed noise
    level on a held-out clip, `top1` rising and `kl` falling show the student's correspondences moving toward the
    teacher's.

    Args:
        student (`torch.Tensor`): projected diffusion features E^VDM, shape `(B, F, H, W, C)`.
        teacher (`torch.Tensor`): foundation-model features E^VFM on the same grid, shape `(B, F, H, W, C)`.
        tau (`float`, defaults to 0.1): softmax temperature of the KL (the top-1 agreement does not depend on it).
        query_mask (`torch.Tensor`, *optional*): bool `(B, F, H, W)`, True for query tokens (M-TSA); `None` makes every
            token a query.
        chunk_size (`int`, *optional*): queries per tile, as in `tsa_loss`.

    Returns:
        `Agreement`: `top1`, `kl` and `num_pairs`.
    """
    if tau <= 0:
        raise UsageError(f"`tau={tau}` must be positive.")
    rows = _token_rows(student, teacher)  # (B, N, C) each
    student_n, teacher_n = (F.normalize(e.float(), dim=-1, eps=_EPS) for e in rows)  # Ē (Eq. 6-7)
    num_frames, height, width = student.shape[1:4]
    keys_per_frame = height * width
    criterion = _TemperedKL(tau)
    top1 = kl = 0.0
    num_pairs = 0
    queries = _query_indices(query_mask, student.shape[:4], student_n.device)
    for b, index in enumerate(queries):
        matches, divergence = student_n.new_zeros(()), student_n.new_zeros(())
        tiling = _Tiling.for_grid(len(index), num_frames, keys_per_frame, chunk_size)
        for query_rows, frames in tiling.tiles(len(index), num_frames):
            query_index, keys = index[query_rows], _frame_rows(frames, keys_per_frame)
            rel_s, rel_t = (
                rearrange(e[b, query_index] @ e[b, keys].T, "q (f k) -> q f k", k=keys_per_frame)
                for e in (student_n, teacher_n)
            )
            matches += (rel_s.argmax(-1) == rel_t.argmax(-1)).sum()
            divergence += criterion(rel_s, rel_t, with_grad=False)[0].sum()  # Eq. 8-9; overwrites the relations
        pairs = len(index) * num_frames
        top1 += matches.item() / pairs
        kl += divergence.item() / pairs
        num_pairs += pairs
    return Agreement(top1=top1 / len(queries), kl=kl / len(queries), num_pairs=num_pairs)


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
    tokens = F.normalize(rearrange(features.float(), "f h w c -> (f h w) c"), dim=-1, eps=_EPS)
    relations = rearrange(tokens[queries.to(tokens.device)] @ tokens.T, "q (f k) -> q f k", f=num_frames)  # Eq. 6-7
    maps = torch.stack([(relations / t).softmax(-1) for t in temperatures])  # Eq. 8
    maps = rearrange(maps, "t q f (h w) -> t q f h w", h=height, w=width)
    return maps[0] if isinstance(tau, (int, float)) else maps
