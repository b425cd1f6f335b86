"""motion_saliency_mask (Eq. 11-12) on synthetic clips, against a hand-written reference."""

import pytest
import torch

from diffusers_tsa import GridError, motion_saliency_mask


def moving_square_clip(frames=16, height=64, width=128, size=16, step=6, noise=10.0, seed=0):
    """A bright 16 x 16 square moving right by `step` pixels a frame in row 16..31, over a dim noisy background.

    Returns the clip (1, T, 3, H, W) in [0, 255] and the square's left x per frame.
    """
    g = torch.Generator().manual_seed(seed)
    clip = noise * torch.rand(1, frames, 3, height, width, generator=g)
    xs = [t * step for t in range(frames)]
    for t, x in enumerate(xs):
        clip[0, t, :, 16 : 16 + size, x : x + size] = 255.0
    return clip, xs


def reference_mask(video, tubelet, ratio):
    """Eq. 11-12 written with loops."""
    pt, ph, pw = tubelet
    b, t, c, h, w = video.shape
    f, gh, gw = t // pt, h // ph, w // pw
    delta = torch.zeros(b, f, gh, gw, dtype=torch.float64)
    for i in range(b):
        for ft in range(1, f):
            for y in range(gh):
                for x in range(gw):
                    cur = video[i, ft * pt : (ft + 1) * pt, :, y * ph : (y + 1) * ph, x * pw : (x + 1) * pw]
                    prev = video[i, (ft - 1) * pt : ft * pt, :, y * ph : (y + 1) * ph, x * pw : (x + 1) * pw]
                    delta[i, ft, y, x] = (cur.double() - prev.double()).abs().sum()
        delta[i, 0] = delta[i, 1]
    k = max(1, round(ratio * gh * gw))
    mask = torch.zeros(b, f, gh, gw, dtype=torch.bool)
    for i in range(b):
        for ft in range(f):
            values = delta[i, ft].flatten().tolist()
            order = sorted(range(len(values)), key=lambda j: (-values[j], j))[:k]
            for j in order:
                mask[i, ft, j // gw, j % gw] = True
    return mask


def test_mask_follows_the_moving_square():
    clip, xs = moving_square_clip()
    mask = motion_saliency_mask(clip, tubelet=(2, 16, 16), ratio=2 / 32)  # 2 of the 4 x 8 tokens per frame
    assert mask.shape == (1, 8, 4, 8)
    columns = [{c for t in (2 * f, 2 * f + 1) for c in range(xs[t] // 16, (xs[t] + 15) // 16 + 1)} for f in range(8)]
    for f in range(1, 8):
        rows, cols = mask[0, f].nonzero().T.tolist()
        assert rows == [1, 1]  # the square's row only
        assert set(cols) <= columns[f - 1] | columns[f]  # where the square was or went
    assert torch.equal(mask[0, 0], mask[0, 1])  # Delta_1 = Delta_2


@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.5, 1.0])
def test_exact_counts_and_reference(ratio):
    clip = torch.randint(0, 256, (2, 8, 3, 32, 64), dtype=torch.uint8)
    mask = motion_saliency_mask(clip, tubelet=(2, 8, 8), ratio=ratio)
    k = max(1, round(ratio * 4 * 8))
    assert mask.dtype == torch.bool and (mask.sum((-1, -2)) == k).all()
    assert torch.equal(mask, reference_mask(clip, (2, 8, 8), ratio))


def test_uint8_is_not_wrapped_around():
    """255 -> 0 and 0 -> 255 both move; uint8 subtraction would wrap one of them to a small value."""
    clip = torch.zeros(1, 4, 1, 2, 4, dtype=torch.uint8)
    clip[0, 2:, :, :, 0] = 255  # column 0 brightens
    clip[0, :2, :, :, 3] = 200  # column 3 darkens, less
    mask = motion_saliency_mask(clip, tubelet=(2, 2, 1), ratio=0.5)
    assert mask[0, 1, 0].tolist() == [True, False, False, True]


def test_ties_are_broken_by_position():
    clip = torch.zeros(1, 4, 3, 16, 16)  # no motion at all: every delta ties
    mask = motion_saliency_mask(clip, tubelet=(2, 4, 4), ratio=0.25)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0] = True
    assert torch.equal(mask[0, 0], expected) and torch.equal(mask[0, 1], expected)


def test_shapes_the_tubelet_does_not_divide_are_refused():
    with pytest.raises(GridError, match=r"use 48 frames and a size of 160x240"):
        motion_saliency_mask(torch.zeros(1, 49, 3, 160, 250))
    with pytest.raises(GridError, match="at least 4 frames"):
        motion_saliency_mask(torch.zeros(1, 2, 3, 32, 32))
    with pytest.raises(GridError, match=r"\(B, T, C, H, W\)"):
        motion_saliency_mask(torch.zeros(8, 3, 32, 32))
    with pytest.raises(ValueError, match="ratio"):
        motion_saliency_mask(torch.zeros(1, 4, 3, 32, 32), ratio=0.0)
