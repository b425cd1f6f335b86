"""AlignmentProjector: grids derived from the configs, VideoREPA's correspondence, refusals."""

import pytest
import torch

from diffusers_tsa import AlignmentProjector, GridError, GridResampling


pytestmark = pytest.mark.minimum  # `make test-minimum`'s fast subset


@pytest.mark.parametrize(
    "student, teacher, drop, up, down",
    [
        ((13, 30, 45), (24, 10, 15), True, (2, 1, 1), (1, 3, 3)),  # CogVideoX-2B 49x480x720, the paper's teacher
        ((3, 6, 9), (4, 2, 3), True, (2, 1, 1), (1, 3, 3)),  # the same rules at the tests' tiny scale
        ((9, 30, 48), (16, 30, 48), True, (2, 1, 1), (1, 1, 1)),  # NOVA 33x480x768, teacher at full size
        ((13, 30, 45), (13, 15, 15), False, (1, 1, 1), (1, 2, 3)),
        ((8, 10, 15), (16, 20, 30), False, (2, 2, 2), (1, 1, 1)),
    ],
)
def test_resampling_is_derived_from_the_grids(student, teacher, drop, up, down):
    assert GridResampling.between(student, teacher) == GridResampling(drop, up, down)


def test_paper_grid_shapes():
    projector = AlignmentProjector(64, 24, student_grid=(13, 30, 45), teacher_grid=(24, 10, 15), hidden_dim=32)
    out = projector(torch.randn(2, 13 * 30 * 45, 64))
    assert out.shape == (2, 24, 10, 15, 24)
    mlp = [m for m in projector.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in mlp] == [(64, 32), (32, 32), (32, 24)]
    assert projector.resample.kernel_size == (1, 3, 3) and projector.resample.stride == (1, 3, 3)


def test_nova_like_grid_shapes():
    projector = AlignmentProjector(16, 8, student_grid=(9, 30, 48), teacher_grid=(16, 30, 48), hidden_dim=16)
    assert projector(torch.randn(1, 9 * 30 * 48, 16)).shape == (1, 16, 30, 48, 8)


def test_videorepa_correspondence():
    """Latent frame 0 has no teacher tubelet; each teacher token sees only its 3 x 3 block of student tokens."""
    projector = AlignmentProjector(8, 4, student_grid=(3, 6, 9), teacher_grid=(4, 2, 3), hidden_dim=16)
    x = torch.randn(1, 3, 6, 9, 8)
    base = projector(x.flatten(1, 3))

    first = x.clone()
    first[:, 0] += 10.0
    assert torch.equal(projector(first.flatten(1, 3)), base)

    token = x.clone()
    token[:, 1, 4, 7] += 10.0  # spatial block (1, 2) of latent frame 1
    changed = (projector(token.flatten(1, 3)) - base).abs().amax(dim=(0, 1, 4)) > 0  # (H_t, W_t)
    expected = torch.zeros(2, 3, dtype=torch.bool)
    expected[1, 2] = True
    assert torch.equal(changed, expected)


def test_paper_path_values_follow_videorepa():
    """VideoREPA's student path, computed independently: the MLP on every token, latent frame 0 dropped, linear x2
    upsampling in time (half-pixel centres, edges clamped), then per frame a 3 x 3 convolution of stride 3."""
    torch.manual_seed(0)
    projector = AlignmentProjector(8, 4, student_grid=(3, 6, 9), teacher_grid=(4, 2, 3), hidden_dim=16)
    tokens = torch.randn(2, 3 * 6 * 9, 8)
    linears = [m for m in projector.mlp if isinstance(m, torch.nn.Linear)]
    x = tokens.view(2, 3, 6, 9, 8)[:, 1:]  # (B, 2, 6, 9, C): latent frames 1 and 2
    for i, linear in enumerate(linears):
        x = x @ linear.weight.T + linear.bias
        x = x * torch.sigmoid(x) if i < 2 else x
    # Output frame j samples input position (j + 0.5) / 2 - 0.5, clamped to [0, 1]: 0, 0.25, 0.75, 1.
    weights = {0: (1.0, 0.0), 1: (0.75, 0.25), 2: (0.25, 0.75), 3: (0.0, 1.0)}
    frames = [a * x[:, 0] + b * x[:, 1] for a, b in weights.values()]
    kernel, bias = projector.resample.weight[:, :, 0], projector.resample.bias  # (C, C, 3, 3)
    expected = torch.zeros(2, 4, 2, 3, 4)
    for f, frame in enumerate(frames):
        for i in range(2):
            for j in range(3):
                block = frame[:, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3]  # (B, 3, 3, C)
                expected[:, f, i, j] = torch.einsum("bhwc,ochw->bo", block, kernel) + bias
    torch.testing.assert_close(projector(tokens), expected, atol=1e-5, rtol=1e-5)


def test_unsupported_pairs_are_refused_with_the_reason():
    with pytest.raises(GridError, match=r"no integer ratio to the teacher's 10 on F.*`TeacherInput.num_frames`"):
        AlignmentProjector(8, 4, student_grid=(13, 30, 45), teacher_grid=(10, 10, 15))
    with pytest.raises(GridError, match=r"keeping the first frame leaves 13 frames, with no integer ratio .* on F"):
        GridResampling.between((13, 30, 45), (24, 10, 15), drop_first_frame=False)
    with pytest.raises(GridError, match=r"has one frame: dropping it .* leaves none"):
        GridResampling.between((1, 30, 45), (1, 10, 15), drop_first_frame=True)


@pytest.mark.parametrize(
    "student, teacher, down, resize",
    [
        ((21, 30, 52), (40, 10, 17), (1, 3, 3), (40, 30, 51)),  # Wan 81x480x832, teacher 80 frames at 160x272
        ((13, 30, 45), (24, 7, 14), (1, 4, 3), (24, 28, 42)),  # 30/7 -> 4 (28), 45/14 -> 3 (42)
        ((5, 6, 9), (8, 4, 7), (1, 2, 1), (8, 8, 7)),  # 6/4 -> 2 (8); 9/7 -> 1 (7): a window of one token
    ],
)
def test_the_general_path_resizes_space_to_a_multiple_of_the_teacher_grid(student, teacher, down, resize):
    resampling = GridResampling.between(student, teacher)
    assert resampling == GridResampling(True, (1, 1, 1), down, resize)
    projector = AlignmentProjector(8, 4, student_grid=student, teacher_grid=teacher, hidden_dim=8)
    assert projector(torch.randn(1, student[0] * student[1] * student[2], 8)).shape == (1, *teacher, 4)


def test_general_path_values_are_a_linear_resize_then_the_strided_convolution():
    """Computed independently: per frame, bilinear resize (half-pixel centres) of the MLP output from 6 x 9 to the
    multiple 8 x 7 of the teacher's 4 x 7, then a 2 x 1 convolution of stride (2, 1); frame 0 dropped, time x2."""
    torch.manual_seed(0)
    projector = AlignmentProjector(8, 4, student_grid=(5, 6, 9), teacher_grid=(8, 4, 7), hidden_dim=16)
    tokens = torch.randn(1, 5 * 6 * 9, 8)
    x = projector.mlp(tokens.view(1, 5, 6, 9, 8)[:, 1:])  # (1, 4, 6, 9, C)
    frames = torch.nn.functional.interpolate(x.permute(0, 4, 1, 2, 3), size=(8, 6, 9), mode="trilinear")
    space = torch.nn.functional.interpolate(frames[0].transpose(0, 1), size=(8, 7), mode="bilinear")  # (F, C, 8, 7)
    expected = torch.nn.functional.conv2d(
        space, projector.resample.weight[:, :, 0], projector.resample.bias, stride=(2, 1)
    )
    torch.testing.assert_close(projector(tokens)[0], expected.permute(0, 2, 3, 1), atol=1e-5, rtol=1e-5)


def test_wrong_token_count_is_refused():
    projector = AlignmentProjector(8, 4, student_grid=(3, 6, 9), teacher_grid=(4, 2, 3), hidden_dim=16)
    with pytest.raises(GridError, match=r"expects \(B, 162, C\) tokens"):
        projector(torch.randn(1, 160, 8))
