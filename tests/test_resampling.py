"""Index and resampling rules at non-integer ratios and at their boundaries, against lists worked out by hand: the
teacher's frame selection, the clip's frame selection, the projector's grid resampling and its time resampling."""

import pytest
import torch

from diffusers_tsa import AlignmentProjector, GridError, GridResampling
from diffusers_tsa.data import ClipSpec, select_frame_indices
from diffusers_tsa.teachers import TeacherInput, VideoMAETeacher
from diffusers_tsa.testing import tiny_videomae


def _seen_frames(total: int, num_frames: int, drop_first_frame: bool) -> list[int]:
    """The clip frames a teacher of `num_frames` frames sees of a `total`-frame clip whose frame t is the gray t."""
    teacher = VideoMAETeacher(
        tiny_videomae(image_size=(32, 32), num_frames=num_frames, tubelet_size=1),
        name="tiny",
        input=TeacherInput(num_frames=num_frames, height=32, width=32, drop_first_frame=drop_first_frame),
    )
    gray = torch.arange(total, dtype=torch.float64) / 64 - 0.5
    video = gray.view(1, total, 1, 1, 1).expand(1, total, 3, 32, 32).contiguous()
    seen = teacher.prepare(video)[0].mean(dim=(1, 2, 3))
    return [round(v) for v in ((seen + 0.5) * 64).tolist()]


@pytest.mark.parametrize(
    "total, num_frames, drop, expected",
    [
        # 11 frames after the first, 4 taken: positions 0, 3.33, 6.67, 10 round to 0, 3, 7, 10 (floor: 0, 3, 6, 10).
        (12, 4, True, [1, 4, 8, 11]),
        # 49 frames kept whole, 16 taken: positions 3.2 i.
        (49, 16, False, [0, 3, 6, 10, 13, 16, 19, 22, 26, 29, 32, 35, 38, 42, 45, 48]),
        # CogVideoX's 49 frames, the first dropped, 16 taken: positions 47 i / 15, then + 1.
        (49, 16, True, [1, 4, 7, 10, 14, 17, 20, 23, 26, 29, 32, 35, 39, 42, 45, 48]),
        (9, 8, True, [1, 2, 3, 4, 5, 6, 7, 8]),  # exactly as many as it takes: all of them
        (9, 8, False, [0, 1, 2, 3, 5, 6, 7, 8]),  # one too many: positions 8 i / 7
        (5, 1, True, [1]),  # one frame: the first kept
    ],
)
def test_the_teacher_takes_the_nearest_frames(total, num_frames, drop, expected):
    assert _seen_frames(total, num_frames, drop) == expected


def test_a_clip_shorter_than_the_teacher_is_refused():
    with pytest.raises(GridError, match="needs 8 frames after the first, but the clip has 8"):
        _seen_frames(8, 8, True)


@pytest.mark.parametrize(
    "total, spec, expected",
    [
        (49, ClipSpec(max_num_frames=49), list(range(49))),  # exactly enough
        (50, ClipSpec(max_num_frames=49), list(range(49))),  # one more: stride 1, the first 49
        (97, ClipSpec(max_num_frames=49), list(range(49))),  # 97 // 49 = 1
        (98, ClipSpec(max_num_frames=49), list(range(0, 98, 2))),  # stride 2 at exactly twice
        (70, ClipSpec(max_num_frames=30), list(range(0, 58, 2))),  # stride 2, 30 kept, trimmed to 29
        (100, ClipSpec(max_num_frames=12), [0, 8, 16, 24, 32, 40, 48, 56, 64]),  # stride 8, 12 kept, trimmed to 9
        (20, ClipSpec(max_num_frames=13, skip_frames_start=3, skip_frames_end=4), list(range(3, 16))),
        (10, ClipSpec(skip_frames_start=4, skip_frames_end=5), [4]),  # one frame left
        (10, ClipSpec(skip_frames_start=5, skip_frames_end=5), []),  # none left
        (10, ClipSpec(skip_frames_end=12), []),
    ],
)
def test_clip_frames_at_the_boundaries(total, spec, expected):
    assert select_frame_indices(total, spec) == expected


@pytest.mark.parametrize(
    "student, teacher, expected",
    [
        # 45 / 16 = 2.81: 48 = 3 x 16 is the nearest multiple; 30 / 10 pairs.
        ((13, 30, 45), (24, 10, 16), GridResampling(True, (1, 1, 1), (1, 3, 3), (24, 30, 48))),
        # fewer student than teacher tokens (10 < 15): resized up to the teacher's 15, a window of one token.
        ((13, 10, 15), (12, 15, 15), GridResampling(True, (1, 1, 1), (1, 1, 1), (12, 15, 15))),
        # time boundaries: one frame each; 2 -> 1 keeps the first frame and halves; 13 -> 13 keeps it.
        ((1, 2, 2), (1, 2, 2), GridResampling(False, (1, 1, 1), (1, 1, 1))),
        ((2, 2, 2), (1, 2, 2), GridResampling(False, (1, 1, 1), (2, 1, 1))),
        ((13, 2, 2), (13, 2, 2), GridResampling(False, (1, 1, 1), (1, 1, 1))),
        ((13, 2, 2), (4, 2, 2), GridResampling(True, (1, 1, 1), (3, 1, 1))),  # 12 frames after the first, / 3
    ],
)
def test_grid_resampling_at_non_integer_ratios_and_boundaries(student, teacher, expected):
    assert GridResampling.between(student, teacher) == expected


def test_the_general_path_picks_the_nearest_multiple_of_the_teacher_size():
    for s in range(1, 61):
        for t in range(1, 21):
            if GridResampling.pairs(s, t):
                continue
            resize = GridResampling.between((2, s, 4), (2, t, 4)).resize[1]
            assert resize % t == 0 and resize >= t
            assert abs(resize - s) == min(abs(k * t - s) for k in range(1, s // t + 2)), (s, t)


def test_frames_with_no_integer_ratio_are_refused():
    with pytest.raises(GridError, match="no integer ratio to the teacher's 4 on F"):
        GridResampling.between((10, 2, 2), (4, 2, 2))


def _frame_projector(student, teacher):
    """A projector whose MLP is the identity and whose convolution averages its window: only the resampling acts."""
    projector = AlignmentProjector(2, 2, student_grid=student, teacher_grid=teacher, hidden_dim=2)
    projector.mlp = torch.nn.Identity()
    with torch.no_grad():
        kernel = projector.resample.weight
        kernel.zero_()
        for c in range(2):
            kernel[c, c] = 1 / kernel[c, c].numel()
        projector.resample.bias.zero_()
    f, h, w = student
    tokens = torch.arange(f, dtype=torch.float32).view(1, f, 1, 1).expand(1, f, h * w, 2).reshape(1, f * h * w, 2)
    return projector(tokens)[0, :, 0, 0, 0].tolist()


def test_time_upsampling_interpolates_between_the_kept_frames():
    # Frames 1..3 after the first is dropped, x2 with half-pixel centres: output j reads position (j + 0.5) / 2 - 0.5,
    # clamped to [0, 2], of the values 1, 2, 3.
    assert _frame_projector((4, 2, 2), (6, 2, 2)) == pytest.approx([1, 1.25, 1.75, 2.25, 2.75, 3])


def test_time_downsampling_averages_pairs_of_the_kept_frames():
    # 9 frames, the first dropped: frames 1..8 in pairs (1, 2), (3, 4), ...
    assert _frame_projector((9, 2, 2), (4, 2, 2)) == pytest.approx([1.5, 3.5, 5.5, 7.5])


@pytest.mark.parametrize(
    "first, last, count, expected",
    [
        (0, 9, 4, [0, 3, 6, 9]),
        (0, 10, 4, [0, 3, 7, 10]),  # positions 10 i / 3, nearest
        (0, 5, 4, [0, 2, 3, 5]),  # positions 5 i / 3
        (0, 4, 8, [0, 1, 2, 3, 4]),  # fewer frames than columns: every one
        (0, 0, 8, [0]),
        (0, 7, 1, [0]),
        (0, 7, 2, [0, 7]),
    ],
)
def test_visualize_columns_are_the_nearest_evenly_spaced_frames(first, last, count, expected):
    from diffusers_tsa.visualize.render import _spread

    assert _spread(first, last, count) == expected


def test_visualize_pixel_queries_fall_in_the_token_under_them():
    import argparse
    from types import SimpleNamespace

    from diffusers_tsa.visualize.command import _queries

    # A 100-pixel-wide clip over 3 token columns (33.3 pixels each) and 90 rows over 2 (45 each).
    points = ["0,0", "33,44", "34,45", "66,89", "67,0", "99,89"]
    args = argparse.Namespace(query_frame=1, query=points, top_k=1)
    queries = _queries(args, ClipSpec(height=90, width=100), SimpleNamespace(grid=(2, 2, 3)), None)
    assert queries == [(1, 0, 0), (1, 0, 0), (1, 1, 1), (1, 1, 1), (1, 0, 2), (1, 1, 2)]


@pytest.mark.parametrize(
    "clip, drop, expected",
    [
        ((9, 30, 30), True, (8, 16, 16)),  # a third is 10 px, under one patch: one patch
        ((9, 96, 144), False, (8, 32, 48)),  # all 9 frames: 8, whole tubelets
        # a third half-way between two multiples (24 = 1.5 patches, 40 = 2.5): the even multiple, as `round` does
        ((10, 72, 120), True, (8, 32, 32)),
    ],
)
def test_the_default_teacher_input_at_the_boundaries(clip, drop, expected):
    given = TeacherInput.for_clip(*clip, patch_size=16, tubelet_size=2, drop_first_frame=drop)
    assert (given.num_frames, given.height, given.width) == expected
