"""How often the student's correspondences agree with the teacher's: top-1 agreement and mean tempered KL over the
queries of a batch (all tokens, or the M-TSA motion mask), streamed over the same tiles as `tsa_loss`, so it never
holds a ``(queries x N)`` relation matrix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..relations import EPS, RelationTiling, TemperedKL, TileBuffers, frame_rows, query_indices, token_rows


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
    rows = token_rows(student, teacher)  # (B, N, C) each
    student_n, teacher_n = (F.normalize(e.float(), dim=-1, eps=EPS) for e in rows)  # Ē (Eq. 6-7)
    num_frames, height, width = student.shape[1:4]
    keys_per_frame = height * width
    criterion, buffers = TemperedKL(tau), TileBuffers()
    top1 = kl = 0.0
    num_pairs = 0
    queries = query_indices(query_mask, student.shape[:4], student_n.device)
    for b, index in enumerate(queries):
        matches, divergence = student_n.new_zeros(()), student_n.new_zeros(())
        tiling = RelationTiling.for_grid(len(index), num_frames, keys_per_frame, chunk_size)
        for query_rows, frames in tiling.tiles(len(index), num_frames):
            query_index, keys = index[query_rows], frame_rows(frames, keys_per_frame)
            rel_s, rel_t, scratch = buffers.relations(  # divided by tau, as the criterion takes them
                *((e[b, query_index] * criterion.scale, e[b, keys]) for e in (student_n, teacher_n)), keys_per_frame
            )
            matches += (rel_s.argmax(-1) == rel_t.argmax(-1)).sum()  # before the criterion overwrites them
            divergence += criterion(rel_s, rel_t, scratch, with_grad=False)[0]  # Eq. 8-9, summed over the tile
        pairs = len(index) * num_frames
        top1 += matches.item() / pairs
        kl += divergence.item() / pairs
        num_pairs += pairs
    return Agreement(top1=top1 / len(queries), kl=kl / len(queries), num_pairs=num_pairs)
