"""Alignment losses between a video diffusion model (student) and a video foundation model (teacher).

- `tsa_loss`: Tempered Self-Similarity Alignment and its motion-focused variant M-TSA (paper Eq. 6-9, 13).
- `trd_loss`: VideoREPA's token relation distillation, a baseline.
- `repa_loss`: REPA's token-wise negative cosine similarity (Eq. 2), a baseline.
- `crepa_loss`: CREPA's cross-frame REPA (arXiv 2506.09229), a baseline: REPA with the neighbouring frames too.

The two relation losses are streamed: the ``(queries x N)`` relation matrices are never held for a whole sample.
They are computed tile by tile (a chunk of queries against a chunk of key frames, `relations.RelationTiling`) by one
`torch.autograd.Function`.
The gradient of a scalar loss with respect to the features is no larger than the features, and its value on
each tile has a closed form (Eq. 10 for TSA), so the same pass over the tiles also accumulates the gradient:
nothing is recomputed in backward, and the cost is that of the naive formula with its autograd backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import GridError
from .relations import EPS, RelationTiling, TemperedKL, TileBuffers, frame_rows, query_indices, token_rows


class _MarginL1:
    """Per (query, frame): sum over keys of relu(|b - a| - margin), VideoREPA's relation distance, summed over the
    tile."""

    scale = 1.0  # the relations are used as they are

    def __init__(self, margin: float):
        self.margin = margin

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, scratch: torch.Tensor, with_grad: bool):
        diff = student.sub_(teacher)
        excess = torch.abs(diff, out=scratch[0]).sub_(self.margin).clamp_min_(0)
        loss = excess.sum()
        return loss, diff.sign_().mul_(excess.sign_()) if with_grad else None  # sign(diff) where |diff| > margin


class _StreamedRelationLoss(torch.autograd.Function):
    """sum_b weight_b * sum_{i in queries_b} sum_f criterion(R_s[i, f], R_t[i, f]), never holding a full R.

    Features are L2-normalised in fp32 and ``R = Ē Ē^T`` (Eq. 6-7) is built one tile at a time, already multiplied
    by the criterion's `scale` (1 / tau for TSA: the query rows are scaled, not the tile). When the student needs a
    gradient, each tile's ``G = d loss / d R_s`` is folded into it right away, in place: ``G Ē_keys`` into the
    query chunk's rows and ``G^T Ē_queries`` into the key rows (R_s is built from the same features on both sides),
    and the result is taken back through the normalisation once at the end. The relations are built once and the
    gradient has a closed form, so each tile costs four matrix products (8 Q K C FLOPs) and a few passes over it.
    Backward only scales the gradient by the incoming one, so the loss keeps no tensor larger than the features
    between forward and backward.
    """

    @staticmethod
    def forward(ctx, student, teacher, criterion, grid, queries, weights, chunk_size):
        # student, teacher: (B, N, C) any float dtype; grid: (F, HW); queries: B index tensors; weights: B floats
        with torch.autocast(student.device.type, enabled=False):  # fp32 relations even inside a mixed-precision region
            total, grad = _StreamedRelationLoss._loss_and_grad(
                student, teacher, criterion, grid, queries, weights, chunk_size, ctx.needs_input_grad[0]
            )
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def _loss_and_grad(student, teacher, criterion, grid, queries, weights, chunk_size, with_grad):
        num_frames, keys_per_frame = grid
        features = student.float()
        norm = features.norm(dim=-1, keepdim=True).clamp_min(EPS)
        student_n, teacher_n = features / norm, F.normalize(teacher.float(), dim=-1, eps=EPS)
        del features
        total = student_n.new_zeros(())
        grad = torch.zeros_like(student_n) if with_grad else None
        buffers = TileBuffers()
        for b, index in enumerate(queries):
            tiling = RelationTiling.for_grid(len(index), num_frames, keys_per_frame, chunk_size)
            step = weights[b] * criterion.scale  # d loss / d R_s = step * G, G the criterion's gradient
            for rows in tiling.query_chunks(len(index)):
                query_index = index[rows]
                e_q = student_n[b, query_index]
                scaled_s, scaled_t = e_q * criterion.scale, teacher_n[b, query_index].mul_(criterion.scale)
                grad_q = torch.zeros_like(e_q) if with_grad else None
                for frames in tiling.frame_chunks(num_frames):
                    keys = frame_rows(frames, keys_per_frame)
                    e_k = student_n[b, keys]
                    tiles = buffers.relations((scaled_s, e_k), (scaled_t, teacher_n[b, keys]), keys_per_frame)
                    loss, g = criterion(*tiles, with_grad)
                    total += weights[b] * loss
                    if with_grad:
                        g = rearrange(g, "q f k -> q (f k)")
                        grad_q.addmm_(g, e_k, alpha=step)
                        grad[b, keys].addmm_(g.T, e_q, alpha=step)
                if with_grad:
                    grad[b].index_add_(0, query_index, grad_q)
        del teacher_n, buffers  # before the radial part: the loss's memory peaks in the loop over tiles
        if with_grad:  # through Ē = E / |E|: remove the radial part, divide by the norm
            radial = torch.einsum("bnc,bnc->bn", grad, student_n).unsqueeze(-1)  # a product: no (B, N, C) temporary
            grad = grad.addcmul_(student_n, radial, value=-1).div_(norm).to(student.dtype)
        return total, grad

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None, None, None, None, None, None


def tsa_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    tau: float = 0.1,
    query_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Tempered Self-Similarity Alignment loss (Eq. 9), or M-TSA when a query mask is given (Eq. 13).

    Features are L2-normalised along channels and flattened to N = F*H*W tokens; each query token's cosine
    similarities to the H*W tokens of every frame f become a distribution P_{i,f} = softmax(R_{i,f} / tau)
    (Eq. 6-8), and the loss is KL(P_teacher || P_student) averaged over the sample's queries and the F frames,
    then over the batch. Keys are always all N tokens. The softmax and KL are computed in fp32 whatever the
    input dtype, and no gradient flows into `teacher`.

    Memory is bounded: relations are computed in tiles of `chunk_size` queries against as many key frames as fit
    in a fixed budget, and the gradient is accumulated in the same pass; nothing of size (queries x N) is kept
    for a whole sample.

    Args:
        student (`torch.Tensor`): projected diffusion features E^VDM, shape `(B, F, H, W, C)`.
        teacher (`torch.Tensor`): foundation-model features E^VFM on the same grid, shape `(B, F, H, W, C)`.
        tau (`float`, defaults to 0.1): softmax temperature; lower values sharpen the correspondences from
            object- to point-level (paper Fig. 3).
        query_mask (`torch.Tensor`, *optional*): bool or integer `(B, F, H, W)`, nonzero for query tokens, e.g. from
            `motion_saliency_mask` (M-TSA). `None` makes every token a query (TSA).
        chunk_size (`int`, *optional*): queries per tile; `None` picks them from the grid, a tile of at most
            8M relation entries.

    Returns:
        `torch.Tensor`: the scalar loss (fp32).
    """
    if tau <= 0:
        raise ValueError(f"`tau` must be positive, got {tau}.")
    s, t = token_rows(student, teacher)
    batch, num_frames, height, width = student.shape[:4]
    queries = query_indices(query_mask, student.shape[:4], s.device)
    # Eq. 13: 1 / (|M| F) per sample, then the batch mean.
    weights = [1.0 / (batch * len(index) * num_frames) for index in queries]
    return _StreamedRelationLoss.apply(
        s, t, TemperedKL(tau), (num_frames, height * width), queries, weights, chunk_size
    )


# Adapted from VideoREPA's token relation distillation (finetune/models/cogvideox_t2v_align/lora_trainer.py,
# `compute_loss`), streamed over key frames instead of two N x N Gram matrices.
def trd_loss(student: torch.Tensor, teacher: torch.Tensor, *, margin: float = 0.1) -> torch.Tensor:
    """VideoREPA's token relation distillation: mean of relu(|S_s - S_t| - margin) over the N x N relations.

    S = Ē Ē^T is the cosine-similarity matrix of all N = F*H*W tokens. The mean is taken over the whole matrix of
    each sample, then over the batch; it is streamed like `tsa_loss`, so no N x N matrix is materialised.

    Args:
        student (`torch.Tensor`): projected diffusion features, shape `(B, F, H, W, C)`.
        teacher (`torch.Tensor`): foundation-model features on the same grid, shape `(B, F, H, W, C)`.
        margin (`float`, defaults to 0.1): differences below this are not penalised.

    Returns:
        `torch.Tensor`: the scalar loss (fp32).
    """
    s, t = token_rows(student, teacher)
    batch, num_frames, height, width = student.shape[:4]
    num_tokens = num_frames * height * width
    queries = query_indices(None, student.shape[:4], s.device)
    weights = [1.0 / (batch * num_tokens * num_tokens)] * batch
    return _StreamedRelationLoss.apply(s, t, _MarginL1(margin), (num_frames, height * width), queries, weights, None)


def repa_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """REPA's alignment loss (Eq. 2): negative cosine similarity of corresponding tokens, averaged.

    Args:
        student (`torch.Tensor`): projected diffusion features, shape `(B, F, H, W, C)`.
        teacher (`torch.Tensor`): foundation-model features on the same grid, shape `(B, F, H, W, C)`.

    Returns:
        `torch.Tensor`: the scalar loss in [-1, 1] (fp32).
    """
    s, t = token_rows(student, teacher)
    return -F.cosine_similarity(s.float(), t.float(), dim=-1, eps=EPS).mean()


def crepa_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    adjacent_distance: int = 1,
    temporal_decay: float = 1.0,
    cumulative_neighbors: bool = False,
) -> torch.Tensor:
    """Cross-frame REPA (CREPA, arXiv 2506.09229): each frame's tokens aligned with the teacher tokens of the same
    frame and of its neighbours, a neighbour at distance d weighted by e^(-d / tau).

    With Ē, Ŷ the L2-normalised student and teacher tokens and s(f, g) = (1 / HW) sum_n <Ē_{f,n}, Ŷ_{g,n}> the mean
    cosine similarity of frame f's student tokens with frame g's teacher tokens at the same positions:

        L = -(1 / B) sum_b (1 / F) sum_f [ s(f, f) + sum_{d in K} e^(-d / tau) (s(f, f + d) + s(f, f - d)) ]

    where a neighbour outside the clip adds no term, and K = {D} (the exact distance, the paper's K = {f - D, f + D})
    or, with `cumulative_neighbors`, K = {1, ..., D}. D is capped at F - 1; D = 0 is per-frame REPA (`repa_loss`).
    These are SimpleTuner's conventions (`crepa_adjacent_distance`, `crepa_adjacent_tau`,
    `crepa_cumulative_neighbors`), including its frame matching: when the student and the teacher have different
    frame counts, the longer side is subsampled to the shorter at frames `linspace(0, T - 1, F)`, rounded down.

    Memory: one feature-sized product per distance, never a relation matrix.

    Args:
        student (`torch.Tensor`): projected diffusion features, shape `(B, F_s, H, W, C)`.
        teacher (`torch.Tensor`): teacher features on the same spatial grid, shape `(B, F_t, H, W, C)`.
        adjacent_distance (`int`, defaults to 1): D, the neighbour distance; `0` aligns each frame with itself only.
        temporal_decay (`float`, defaults to 1.0): tau; a neighbour at distance d weighs e^(-d / tau).
        cumulative_neighbors (`bool`, defaults to `False`): use every distance 1..D instead of D alone.

    Returns:
        `torch.Tensor`: the scalar loss (fp32).
    """
    if adjacent_distance < 0:
        raise ValueError(f"`adjacent_distance` must be >= 0, got {adjacent_distance}.")
    if temporal_decay <= 0:
        raise ValueError(f"`temporal_decay` must be positive, got {temporal_decay}.")
    if student.ndim != 5 or student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
        raise GridError(
            "`student` and `teacher` must be token grids (B, F, H, W, C) with the same B, H, W and C (F may differ), "
            f"got {tuple(student.shape)} and {tuple(teacher.shape)}; project the student onto the teacher's grid first "
            "(see `AlignmentProjector`)."
        )
    student, teacher = _matched_frames(student, teacher.detach())
    with torch.autocast(student.device.type, enabled=False):  # fp32 similarities inside a mixed-precision region
        s, t = (
            F.normalize(rearrange(e.float(), "b f h w c -> b f (h w) c"), dim=-1, eps=EPS) for e in (student, teacher)
        )

        def similarity(f: slice, g: slice) -> torch.Tensor:  # s(f, g) over frame ranges of one length: (B, len)
            return torch.einsum("bfnc,bfnc->bf", s[:, f], t[:, g]) / s.shape[2]

        total = similarity(slice(None), slice(None))
        distance = min(adjacent_distance, s.shape[1] - 1)
        for d in range(1 if cumulative_neighbors else max(distance, 1), distance + 1):
            weight = math.exp(-d / temporal_decay)
            total = total + F.pad(weight * similarity(slice(None, -d), slice(d, None)), (0, d))  # f -> f + d
            total = total + F.pad(weight * similarity(slice(d, None), slice(None, -d)), (d, 0))  # f -> f - d
        return -total.mean()


def _matched_frames(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Subsamples the side with more frames, T, to the other's count F at `linspace(0, T - 1, F)` rounded down
    (computed in integers, so that an index that is a whole number is never rounded to the one below)."""
    count = min(student.shape[1], teacher.shape[1])
    return tuple(
        e
        if e.shape[1] == count
        else e[:, torch.arange(count, device=e.device) * (e.shape[1] - 1) // max(count - 1, 1)]
        for e in (student, teacher)
    )
