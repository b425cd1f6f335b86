"""`alignment_agreement`, `correspondence_maps` and `resample_tokens` against formulas written out here, on small random
grids."""

import pytest
import torch
import torch.nn.functional as F

from diffusers_tsa import GridError, motion_saliency_mask, relations, tsa_loss
from diffusers_tsa.diagnostics import (
    Agreement,
    alignment_agreement,
    correspondence_maps,
    query_tokens,
    resample_tokens,
)


GRID = (3, 4, 5)  # F, H, W: N = 60 tokens, 20 keys per frame


def features(batch=2, channels=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *GRID, channels, generator=generator)


def naive_maps(grid_features, index, tau):
    """P_{i,f} for token `index` of one sample `(F, H, W, C)`: normalise, R = E E^T, frame by frame softmax(R / tau)."""
    num_frames, height, width, channels = grid_features.shape
    e = grid_features.reshape(-1, channels)
    e = e / e.norm(dim=-1, keepdim=True)
    relations = (e @ e.T)[index].reshape(num_frames, height * width)
    return torch.softmax(relations / tau, dim=-1).reshape(num_frames, height, width)


def test_heatmaps_equal_a_naive_softmax_at_several_temperatures():
    grid = features(batch=1)[0]
    positions = [(0, 0, 0), (1, 2, 3), (2, 3, 4)]
    queries = query_tokens(GRID, positions)
    maps = correspondence_maps(grid, queries, tau=[1.0, 0.1])
    assert maps.shape == (2, 3, *GRID) and maps.dtype == torch.float32
    for t, tau in enumerate([1.0, 0.1]):
        for q, index in enumerate(queries.tolist()):
            torch.testing.assert_close(maps[t, q], naive_maps(grid, index, tau), rtol=1e-5, atol=1e-6)
    single = correspondence_maps(grid.half(), queries, tau=0.1)  # fp32 whatever the input dtype
    assert single.shape == (3, *GRID) and single.dtype == torch.float32
    torch.testing.assert_close(single.sum((-1, -2)), torch.ones(3, GRID[0]))


def test_query_positions_outside_the_grid_are_refused():
    with pytest.raises(GridError, match=r"`query=\(3, 0, 0\)`"):
        query_tokens(GRID, [(0, 0, 0), (3, 0, 0)])
    assert query_tokens(GRID, [(1, 2, 3)]).tolist() == [1 * 20 + 2 * 5 + 3]


@pytest.mark.parametrize("masked", [False, True])
def test_the_metric_kl_is_the_tsa_loss(masked):
    student, teacher = features(seed=1), features(seed=2)
    mask = None
    if masked:
        mask = motion_saliency_mask(torch.rand(2, 6, 3, 8, 10), tubelet=(2, 2, 2), ratio=0.3)
        assert mask.shape == (2, *GRID)
    agreement = alignment_agreement(student, teacher, tau=0.1, query_mask=mask)
    expected = tsa_loss(student, teacher, tau=0.1, query_mask=mask)
    assert agreement.kl == pytest.approx(expected.item(), rel=1e-5)
    queries = 2 * 60 if mask is None else int(mask.sum())
    assert isinstance(agreement, Agreement) and agreement.num_pairs == queries * GRID[0]


def permute_keys(grid_features, frames, permutation):
    """The features with the H*W tokens of each frame in `frames` reordered by `permutation`."""
    out = grid_features.clone()
    for f in frames:
        flat = out[:, f].reshape(out.shape[0], -1, out.shape[-1])
        out[:, f] = flat[:, permutation].reshape(out[:, f].shape)
    return out


def hand_count(teacher, student):
    """Share of (query, frame) pairs whose arg-max keys agree, counted one pair at a time."""
    batch, num_frames, height, width, _ = teacher.shape
    share = 0.0
    for b in range(batch):
        t, s = (F.normalize(x[b].reshape(-1, x.shape[-1]), dim=-1) for x in (teacher, student))
        agree = 0
        for i in range(num_frames * height * width):
            for f in range(num_frames):
                keys = slice(f * height * width, (f + 1) * height * width)
                agree += int((t[i] @ t[keys].T).argmax() == (s[i] @ s[keys].T).argmax())
        share += agree / (num_frames * height * width * num_frames)
    return share / batch


def test_top1_counts_agreeing_argmax_keys():
    teacher = F.one_hot(torch.arange(60).repeat(2, 1) % 20, 20).float().reshape(2, *GRID, 20)
    teacher = teacher + 0.01 * features(channels=20, seed=3)  # frame f token k is closest to token k of every frame
    assert alignment_agreement(teacher, teacher).top1 == 1.0

    # Swapping keys 0 and 1 of frame 2 (student token (2, k) is teacher token (2, swap[k])): queries at positions 0, 1
    # of frames 0 and 1 now find their best frame-2 key at the other position (2 x 2 pairs), and the two swapped
    # queries of frame 2 find theirs in frames 0 and 1 at the other position (2 x 2 pairs), of 60 x 3 pairs.
    swap = torch.arange(20)
    swap[[0, 1]] = swap[[1, 0]]
    student = permute_keys(teacher, [2], swap)
    expected = 1 - (2 * 2 + 2 * 2) / (60 * 3)
    agreement = alignment_agreement(student, teacher)
    assert agreement.top1 == pytest.approx(expected)
    assert agreement.top1 == pytest.approx(hand_count(teacher, student))

    # A random permutation of the keys of frames 1 and 2, checked against the pair-by-pair count.
    shuffled = permute_keys(teacher, [1, 2], torch.randperm(20, generator=torch.Generator().manual_seed(4)))
    reference = alignment_agreement(shuffled, teacher)
    assert reference.top1 == pytest.approx(hand_count(teacher, shuffled))
    assert reference.top1 < 1.0

    # Several tiles give the same numbers: chunks of 7 queries, then one query against one key frame per tile.
    for tiled in (alignment_agreement(shuffled, teacher, chunk_size=7), one_key_frame_per_tile(shuffled, teacher)):
        assert (tiled.top1, tiled.num_pairs) == (reference.top1, reference.num_pairs)
        assert tiled.kl == pytest.approx(reference.kl, rel=1e-5)


def one_key_frame_per_tile(student, teacher):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(relations, "TILE_ELEMENTS", GRID[1] * GRID[2])
        assert relations.RelationTiling.for_grid(60, 3, 20, None) == relations.RelationTiling(1, 1)
        return alignment_agreement(student, teacher)


def test_raw_tokens_drop_the_first_frame_then_average_or_repeat():
    student_grid, teacher_grid = (3, 4, 6), (4, 2, 3)  # after frame 0: x2 in time, /2 in space
    tokens = torch.randn(2, 3 * 4 * 6, 5, generator=torch.Generator().manual_seed(0))
    resampled = resample_tokens(tokens, student_grid, teacher_grid)
    grid = tokens.reshape(2, 3, 4, 6, 5)
    expected = torch.stack(
        [
            torch.stack(
                [
                    torch.stack(
                        [grid[:, 1 + f // 2, 2 * h : 2 * h + 2, 2 * w : 2 * w + 2].mean((1, 2)) for w in range(3)]
                    )
                    for h in range(2)
                ]
            )
            for f in range(4)
        ]
    )  # (F, H, W, B, D)
    torch.testing.assert_close(resampled, expected.permute(3, 0, 1, 2, 4))
    kept = resample_tokens(tokens, student_grid, (3, 2, 3), drop_first_frame=False)
    torch.testing.assert_close(kept[:, 0, 0, 0], grid[:, 0, :2, :2].mean((1, 2)))
    with pytest.raises(GridError, match="Cannot resample"):
        resample_tokens(tokens, student_grid, (5, 2, 3))
