"""Alignment losses between a video diffusion model (student) and a video foundation model (teacher).

- `tsa_loss`: Tempered Self-Similarity Alignment and its motion-focused variant M-TSA (paper Eq. 6-9, 13).
- `trd_loss`: VideoREPA's token relation distillation, a baseline.
- `repa_loss`: REPA's token-wise negative cosine similarity (Eq. 2), a baseline.

Both relation losses are streamed: the ``(queries x N)`` relation matrices are never held for a whole sample.
They are computed tile by tile (a chunk of queries against a chunk of key frames) by one `torch.autograd.Function`
that keeps only per-(query, frame) statistics and recomputes each tile in backward, where the gradient with
respect to the student's relations has a closed form (Eq. 10 for TSA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import GridError

# Relation entries per tile (a chunk of queries x a chunk of key frames). Each tile holds a few fp32 tensors of
# this size, so the default keeps the loss's working memory near 100 MB whatever the grid.
_TILE_ELEMENTS = 2**22


class _TemperedKL:
    """Per (query, frame): KL(softmax(a / tau) || softmax(b / tau)) over the H*W keys of the frame (Eq. 8-9).

    With a, b the teacher's and student's relations, ``KL = sum_j P_j (a_j - b_j) / tau - LSE(a / tau) +
    LSE(b / tau)``, so the two log-sum-exps per (query, frame) are all that backward needs to rebuild P and Q.
    """

    num_stats = 2

    def __init__(self, tau: float):
        self.tau = tau

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`student`, `teacher`: (Q, Fk, HW) relations. Returns the KL (Q, Fk) and the statistics (Q, Fk, 2)."""
        a, b = teacher / self.tau, student / self.tau
        lse_a, lse_b = a.logsumexp(-1), b.logsumexp(-1)
        p = torch.exp(a - lse_a.unsqueeze(-1))
        kl = (p * (a - b)).sum(-1) - lse_a + lse_b
        return kl, torch.stack([lse_a, lse_b], dim=-1)

    def grad(self, student: torch.Tensor, teacher: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """d KL / d student relations, (P_student - P_teacher) / tau (Eq. 10); shape (Q, Fk, HW)."""
        p = torch.exp(teacher / self.tau - stats[..., 0:1])
        q = torch.exp(student / self.tau - stats[..., 1:2])
        return (q - p) / self.tau


class _MarginL1:
    """Per (query, frame): sum over keys of relu(|a - b| - margin), VideoREPA's relation distance."""

    num_stats = 0

    def __init__(self, margin: float):
        self.margin = margin

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, None]:
        return F.relu((student - teacher).abs() - self.margin).sum(-1), None

    def grad(self, student: torch.Tensor, teacher: torch.Tensor, stats: None) -> torch.Tensor:
        diff = student - teacher
        return torch.sign(diff) * (diff.abs() > self.margin)


@dataclass(frozen=True)
class _Tiling:
    """How the (queries x frames x keys-per-frame) relation volume of one sample is cut into tiles."""

    queries_per_tile: int
    frames_per_tile: int

    @classmethod
    def for_grid(cls, num_queries: int, num_frames: int, keys_per_frame: int, chunk_size: int | None) -> "_Tiling":
        num_keys = num_frames * keys_per_frame
        queries = chunk_size or max(1, _TILE_ELEMENTS // num_keys)
        queries = min(queries, num_queries)
        frames = min(num_frames, max(1, _TILE_ELEMENTS // (queries * keys_per_frame)))
        return cls(queries, frames)

    def tiles(self, num_queries: int, num_frames: int):
        for q0 in range(0, num_queries, self.queries_per_tile):
            for f0 in range(0, num_frames, self.frames_per_tile):
                yield slice(q0, q0 + self.queries_per_tile), slice(f0, f0 + self.frames_per_tile)


class _StreamedRelationLoss(torch.autograd.Function):
    """sum_b sum_{i in queries_b} weight_b * sum_f criterion(R_s[i, f], R_t[i, f]), never holding a full R.

    Inputs are L2-normalised fp32 features; ``R = E E^T`` (Eq. 6-7) is built one tile at a time. Forward keeps
    the criterion's per-(query, frame) statistics; backward rebuilds each tile, asks the criterion for
    ``G = d loss / d R_s`` and accumulates ``G E_keys`` into the query rows and ``G^T E_queries`` into the key
    rows (R_s is symmetric in the features it is built from).
    """

    @staticmethod
    def forward(ctx, student, teacher, criterion, grid, queries, weights, chunk_size):
        # student, teacher: (B, N, C); grid: (F, HW); queries: list of B index tensors; weights: list of floats
        num_frames, keys_per_frame = grid
        total = student.new_zeros(())
        stats = []
        tilings = []
        for b, index in enumerate(queries):
            tiling = _Tiling.for_grid(len(index), num_frames, keys_per_frame, chunk_size)
            sample_stats = student.new_empty(len(index), num_frames, criterion.num_stats)
            for rows, frames in tiling.tiles(len(index), num_frames):
                rel_s, rel_t = _relation_tile(student[b], teacher[b], index[rows], frames, keys_per_frame)
                loss, tile_stats = criterion.forward(rel_s, rel_t)
                total += weights[b] * loss.sum()
                if tile_stats is not None:
                    sample_stats[rows, frames] = tile_stats
            stats.append(sample_stats)
            tilings.append(tiling)
        ctx.save_for_backward(student, teacher, *stats)
        ctx.criterion, ctx.grid, ctx.queries, ctx.weights, ctx.tilings = criterion, grid, queries, weights, tilings
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        student, teacher, *stats = ctx.saved_tensors
        num_frames, keys_per_frame = ctx.grid
        grad = torch.zeros_like(student)
        for b, index in enumerate(ctx.queries):
            scale = grad_output * ctx.weights[b]
            for rows, frames in ctx.tilings[b].tiles(len(index), num_frames):
                query_index = index[rows]
                rel_s, rel_t = _relation_tile(student[b], teacher[b], query_index, frames, keys_per_frame)
                g = ctx.criterion.grad(rel_s, rel_t, stats[b][rows, frames]) * scale
                g = rearrange(g, "q f k -> q (f k)")
                keys = _frame_rows(frames, keys_per_frame)
                grad[b].index_add_(0, query_index, g @ student[b, keys])
                grad[b, keys] += g.transpose(0, 1) @ student[b, query_index]
        return grad, None, None, None, None, None, None


def _frame_rows(frames: slice, keys_per_frame: int) -> slice:
    return slice(frames.start * keys_per_frame, frames.stop * keys_per_frame)


def _relation_tile(
    student: torch.Tensor, teacher: torch.Tensor, query_index: torch.Tensor, frames: slice, keys_per_frame: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `query_index` of R = E E^T against the keys of `frames`, for both models: two (Q, Fk, HW) tensors."""
    keys = _frame_rows(frames, keys_per_frame)
    rel = [e[query_index] @ e[keys].transpose(0, 1) for e in (student, teacher)]
    return tuple(rearrange(r, "q (f k) -> q f k", k=keys_per_frame) for r in rel)


def _normalised_tokens(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks two (B, F, H, W, C) grids and returns their L2-normalised fp32 tokens, (B, N, C) each."""
    if student.ndim != 5 or student.shape != teacher.shape:
        raise GridError(
            "`student` and `teacher` must be token grids of the same shape (B, F, H, W, C), got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}; project the student onto the teacher's grid "
            "first (see `AlignmentProjector`)."
        )
    tokens = [rearrange(e.float(), "b f h w c -> b (f h w) c") for e in (student, teacher.detach())]
    return F.normalize(tokens[0], dim=-1), F.normalize(tokens[1], dim=-1)


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
    in a fixed budget, and recomputed in backward; nothing of size (queries x N) is kept for a whole sample.

    Args:
        student (`torch.Tensor`): projected diffusion features E^VDM, shape `(B, F, H, W, C)`.
        teacher (`torch.Tensor`): foundation-model features E^VFM on the same grid, shape `(B, F, H, W, C)`.
        tau (`float`, defaults to 0.1): softmax temperature; lower values sharpen the correspondences from
            object- to point-level (paper Fig. 3).
        query_mask (`torch.Tensor`, *optional*): bool `(B, F, H, W)`, True for query tokens, e.g. from
            `motion_saliency_mask` (M-TSA). `None` makes every token a query (TSA).
        chunk_size (`int`, *optional*): queries per tile; `None` picks the largest that keeps a tile near
            4M relation entries.

    Returns:
        `torch.Tensor`: the scalar loss (fp32).
    """
    if tau <= 0:
        raise ValueError(f"`tau` must be positive, got {tau}.")
    s, t = _normalised_tokens(student, teacher)
    batch, num_frames, height, width = student.shape[:4]
    queries = _query_indices(query_mask, student.shape[:4], s.device)
    # Eq. 13: 1 / (|M| F) per sample, then the batch mean.
    weights = [1.0 / (batch * len(index) * num_frames) for index in queries]
    return _StreamedRelationLoss.apply(
        s, t, _TemperedKL(tau), (num_frames, height * width), queries, weights, chunk_size
    )


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
    s, t = _normalised_tokens(student, teacher)
    batch, num_frames, height, width = student.shape[:4]
    num_tokens = num_frames * height * width
    queries = _query_indices(None, student.shape[:4], s.device)
    weights = [1.0 / (batch * num_tokens * num_tokens)] * batch
    return _StreamedRelationLoss.apply(
        s, t, _MarginL1(margin), (num_frames, height * width), queries, weights, None
    )


def repa_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """REPA's alignment loss (Eq. 2): negative cosine similarity of corresponding tokens, averaged.

    Args:
        student (`torch.Tensor`): projected diffusion features, shape `(B, F, H, W, C)`.
        teacher (`torch.Tensor`): foundation-model features on the same grid, shape `(B, F, H, W, C)`.

    Returns:
        `torch.Tensor`: the scalar loss in [-1, 1] (fp32).
    """
    s, t = _normalised_tokens(student, teacher)
    return -(s * t).sum(-1).mean()


def _query_indices(
    query_mask: torch.Tensor | None, grid: torch.Size, device: torch.device
) -> list[torch.Tensor]:
    """Flat token indices of the queries of each sample; all N tokens when there is no mask."""
    batch = grid[0]
    num_tokens = math.prod(grid[1:])
    if query_mask is None:
        return [torch.arange(num_tokens, device=device)] * batch
    if query_mask.shape != grid or query_mask.dtype != torch.bool:
        raise GridError(
            f"`query_mask` must be a bool tensor of shape (B, F, H, W) = {tuple(grid)}, got {query_mask.dtype} "
            f"{tuple(query_mask.shape)}; build it with `motion_saliency_mask` at the teacher's tubelet."
        )
    flat = rearrange(query_mask, "b f h w -> b (f h w)").to(device)
    indices = [row.nonzero().squeeze(-1) for row in flat]
    empty = [b for b, index in enumerate(indices) if len(index) == 0]
    if empty:
        raise ValueError(f"`query_mask` selects no query token in sample(s) {empty}; every sample needs one.")
    return indices
