"""The relation volume that the relation losses and the diagnostics share: token rows, query sets, tiles and the
tempered KL of correspondences (paper Eq. 6-10).

With features `(B, F, H, W, C)` flattened to `N = F*H*W` token rows and L2-normalised, a sample's relations
`R = Ē Ē^T` (Eq. 6-7) are never held whole: for each sample, its query rows (all N tokens, or the M-TSA mask) are cut
into tiles of a chunk of queries against a chunk of key frames, `(Q, F_k, H*W)` relations each, and a criterion such
as `TemperedKL` turns a tile into per-(query, frame) values. `tsa_loss`, `trd_loss` and `alignment_agreement` walk the
same tiles.

- `token_rows`: two checked `(B, F, H, W, C)` grids as `(B, N, C)` rows, the teacher detached.
- `query_indices`: the flat query token indices of each sample.
- `RelationTiling`: how one sample's `(queries x frames x keys per frame)` volume is cut; `frame_rows` maps a slice of
  key frames to its token rows.
- `TileBuffers`: the tiles of one call, allocated once and reused.
- `TemperedKL`: KL(softmax(R_t / tau) || softmax(R_s / tau)) per (query, frame), with its gradient (Eq. 8-10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from einops import rearrange

from .errors import GridError


#: Relation entries per tile (a chunk of queries x a chunk of key frames). Each tile holds a few fp32 tensors of this
#: size, so the default keeps the working memory near 200 MB whatever the grid.
TILE_ELEMENTS = 2**23
#: Queries per tile when a sample's query rows do not fit whole: the inner dimension of the key-side gradient
#: product, which runs well below the matmul rate with fewer (2048 against 512: 0.87x against 0.95x the naive
#: formula's time at 16k tokens on 2 CPU threads).
QUERIES_PER_TILE = 2048
#: The `eps` of every L2 normalisation of features, as in `torch.nn.functional.normalize`.
EPS = 1e-12


class TemperedKL:
    """Per (query, frame): KL(softmax(a / tau) || softmax(b / tau)) over the H*W keys of the frame (Eq. 8-9), with
    a, b the teacher's and the student's relations; its gradient in b / tau is P_student - P_teacher (Eq. 10).

    The tile's relations come already divided by tau (`scale = 1 / tau` is folded into the query rows before the
    product, so no pass over the tile divides them).

    Args:
        tau (`float`): the softmax temperature, positive.
    """

    def __init__(self, tau: float):
        self.tau = tau
        #: the factor the relations are multiplied by before `__call__`, and its gradient after.
        self.scale = 1.0 / tau

    def __call__(
        self, student: torch.Tensor, teacher: torch.Tensor, scratch: torch.Tensor, with_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The KL of one tile, summed over its (query, frame) pairs. The tiles are overwritten and nothing of their
        size is allocated.

        Args:
            student (`torch.Tensor`): the student's relations divided by tau, `(Q, F_k, HW)`, contiguous.
            teacher (`torch.Tensor`): the teacher's relations divided by tau, `(Q, F_k, HW)`, contiguous.
            scratch (`torch.Tensor`): two contiguous fp32 tiles, `(2, Q, F_k, HW)`.
            with_grad (`bool`): whether to return the gradient in `student` too.

        Returns:
            `tuple[torch.Tensor, torch.Tensor | None]`: the summed KL (a scalar), and its gradient `(Q, F_k, HW)` in
            `student` (or `None`), written over `student`.
        """
        log_p = torch.log_softmax(teacher, -1, out=scratch[0]).view(-1)
        log_q = torch.log_softmax(student, -1, out=scratch[1]).view(-1)
        p = torch.exp(log_p, out=teacher.view(-1))
        kl = torch.dot(p, log_p) - torch.dot(p, log_q)  # sum of p (log p - log q): two reads, no tile written
        return kl, torch.exp(log_q, out=student.view(-1)).sub_(p).view(student.shape) if with_grad else None


@dataclass(frozen=True)
class RelationTiling:
    """How the `(queries x frames x keys per frame)` relation volume of one sample is cut into tiles.

    Attributes:
        queries_per_tile (`int`): query rows of a tile.
        frames_per_tile (`int`): key frames of a tile (each `keys_per_frame` token rows).
    """

    queries_per_tile: int
    frames_per_tile: int

    @classmethod
    def for_grid(
        cls, num_queries: int, num_frames: int, keys_per_frame: int, chunk_size: int | None
    ) -> RelationTiling:
        """The tiling of one sample, from its size: `chunk_size` queries a tile, or else as many as fill
        `TILE_ELEMENTS` against all `num_frames * keys_per_frame` keys but at least `QUERIES_PER_TILE` (while one
        key frame fits); then as many key frames as fit in `TILE_ELEMENTS` with them. Both counts are evened out
        over the chunks, so that the last tile is not a sliver.

        Args:
            num_queries (`int`): the sample's query tokens.
            num_frames (`int`): token frames F.
            keys_per_frame (`int`): tokens of one frame, H*W.
            chunk_size (`int`, *optional*): queries per tile; `None` picks them from the grid.
        """
        if chunk_size is None:
            one_frame = min(QUERIES_PER_TILE, TILE_ELEMENTS // keys_per_frame)
            chunk_size = max(1, one_frame, TILE_ELEMENTS // (num_frames * keys_per_frame))
        queries = _even(num_queries, chunk_size)
        return cls(queries, _even(num_frames, max(1, TILE_ELEMENTS // (queries * keys_per_frame))))

    def query_chunks(self, num_queries: int) -> Iterator[slice]:
        """Yields the slices of query positions of the tiles, in order."""
        for q0 in range(0, num_queries, self.queries_per_tile):
            yield slice(q0, q0 + self.queries_per_tile)

    def frame_chunks(self, num_frames: int) -> Iterator[slice]:
        """Yields the slices of key frames of the tiles, in order."""
        for f0 in range(0, num_frames, self.frames_per_tile):
            yield slice(f0, min(f0 + self.frames_per_tile, num_frames))

    def tiles(self, num_queries: int, num_frames: int) -> Iterator[tuple[slice, slice]]:
        """Yields `(query positions, key frames)` slices covering `num_queries x num_frames`, queries outermost."""
        for rows in self.query_chunks(num_queries):
            for frames in self.frame_chunks(num_frames):
                yield rows, frames


class TileBuffers:
    """The fp32 tiles of one call, allocated once and reused by every tile: the student's and the teacher's relations
    and two scratch tiles for the criterion, so that the loop over tiles allocates nothing of a tile's size (and the
    memory it holds is the same at every tile)."""

    def __init__(self):
        self._flat: torch.Tensor | None = None  # (4, elements), grown to the largest tile

    def relations(
        self,
        student: tuple[torch.Tensor, torch.Tensor],
        teacher: tuple[torch.Tensor, torch.Tensor],
        keys_per_frame: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A tile's relations `queries @ keys^T` of the student and of the teacher, and the scratch tiles.

        Args:
            student (`tuple[torch.Tensor, torch.Tensor]`): the student's query rows `(Q, C)` and key rows `(K, C)`.
            teacher (`tuple[torch.Tensor, torch.Tensor]`): the teacher's, of the same shapes.
            keys_per_frame (`int`): H*W; K is a whole number of key frames.

        Returns:
            `tuple[torch.Tensor, torch.Tensor, torch.Tensor]`: the relations, contiguous `(Q, K / HW, HW)` each, and
            the scratch `(2, Q, K / HW, HW)`, views of the buffers: valid until the next call.
        """
        num_queries, num_keys = student[0].shape[0], student[1].shape[0]
        size = num_queries * num_keys
        if self._flat is None or self._flat.shape[1] < size:
            self._flat = None  # the old buffers go before the new ones come
            self._flat = student[0].new_empty(4, size, dtype=torch.float32)
        tiles = rearrange(self._flat[:, :size], "n (q f k) -> n q f k", q=num_queries, k=keys_per_frame)
        for (q, k), tile in zip((student, teacher), tiles):
            torch.mm(q, k.T, out=rearrange(tile, "q f k -> q (f k)"))
        return tiles[0], tiles[1], tiles[2:]


def _even(total: int, most: int) -> int:
    """The chunk length that cuts `total` into as few chunks of at most `most` as possible, of near-equal length."""
    return -(-total // -(-total // min(most, total)))


def frame_rows(frames: slice, keys_per_frame: int) -> slice:
    """The token rows of the key frames `frames` (a slice from `RelationTiling.tiles`) in `(N, C)` rows."""
    return slice(frames.start * keys_per_frame, frames.stop * keys_per_frame)


def token_rows(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks two token grids and returns them as token rows, the teacher detached.

    Args:
        student (`torch.Tensor`): projected diffusion features, shape `(B, F, H, W, C)`.
        teacher (`torch.Tensor`): foundation-model features on the same grid, shape `(B, F, H, W, C)`.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: both as `(B, N, C)`, `N = F*H*W`.

    Raises:
        `GridError`: when the grids are not 5-dimensional or differ in shape.
    """
    if student.ndim != 5 or student.shape != teacher.shape:
        raise GridError(
            "`student` and `teacher` must be token grids of the same shape (B, F, H, W, C), got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}; project the student onto the teacher's grid "
            "first (see `AlignmentProjector`)."
        )
    return tuple(rearrange(e, "b f h w c -> b (f h w) c") for e in (student, teacher.detach()))


def query_indices(query_mask: torch.Tensor | None, grid: torch.Size, device: torch.device) -> list[torch.Tensor]:
    """Flat token indices of the queries of each sample.

    Args:
        query_mask (`torch.Tensor`, *optional*): bool or integer `(B, F, H, W)`, nonzero for query tokens; `None` makes every token a
            query.
        grid (`torch.Size`): `(B, F, H, W)`, the features' shape without channels.
        device (`torch.device`): where the indices go.

    Returns:
        `list[torch.Tensor]`: B long tensors of query indices in `[0, N)`, ascending.

    Raises:
        `GridError`: for a mask of another shape or dtype; `ValueError` when a sample has no query.
    """
    batch = grid[0]
    num_tokens = math.prod(grid[1:])
    if query_mask is None:
        return [torch.arange(num_tokens, device=device)] * batch
    if query_mask.shape != grid or query_mask.is_floating_point() or query_mask.is_complex():
        raise GridError(
            f"`query_mask` must be a bool or integer tensor of shape (B, F, H, W) = {tuple(grid)}, got "
            f"{query_mask.dtype} {tuple(query_mask.shape)}; build it with `motion_saliency_mask` at the teacher's "
            "tubelet."
        )
    query_mask = query_mask != 0  # any integer dtype (a mask stored as uint8, collated as int64): nonzero = query
    flat = rearrange(query_mask, "b f h w -> b (f h w)").to(device)
    indices = [row.nonzero().squeeze(-1) for row in flat]
    empty = [b for b, index in enumerate(indices) if len(index) == 0]
    if empty:
        raise ValueError(f"`query_mask` selects no query token in sample(s) {empty}; every sample needs one.")
    return indices
