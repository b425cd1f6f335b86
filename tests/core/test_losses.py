"""tsa_loss, trd_loss, repa_loss and crepa_loss against naive implementations written straight from the equations."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffusers_tsa import GridError, crepa_loss, motion_saliency_mask, relations, repa_loss, trd_loss, tsa_loss


pytestmark = pytest.mark.minimum  # `make test-minimum`'s fast subset


def naive_tsa(student, teacher, tau=0.1, query_mask=None):
    """Eq. 6-9 and 13 in float64, materialising the full N x N relations of each sample."""
    batch, frames, height, width, channels = student.shape
    per_sample = []
    for b in range(batch):
        e_s = F.normalize(student[b].reshape(-1, channels).double(), dim=-1)
        e_t = F.normalize(teacher[b].detach().reshape(-1, channels).double(), dim=-1)
        r_s = (e_s @ e_s.T).reshape(-1, frames, height * width)  # Eq. 7, viewed as N x F x HW
        r_t = (e_t @ e_t.T).reshape(-1, frames, height * width)  # Eq. 6
        log_p, log_q = (r_t / tau).log_softmax(-1), (r_s / tau).log_softmax(-1)  # Eq. 8
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (N, F)
        queries = torch.ones(kl.shape[0], dtype=torch.bool) if query_mask is None else query_mask[b].reshape(-1)
        per_sample.append(kl[queries].sum() / (queries.sum() * frames))  # Eq. 9 / Eq. 13
    return torch.stack(per_sample).mean()


def naive_trd(student, teacher, margin=0.1):
    batch, channels = student.shape[0], student.shape[-1]
    e_s = F.normalize(student.reshape(batch, -1, channels).double(), dim=-1)
    e_t = F.normalize(teacher.detach().reshape(batch, -1, channels).double(), dim=-1)
    diff = (e_s @ e_s.transpose(1, 2) - e_t @ e_t.transpose(1, 2)).abs()
    return F.relu(diff - margin).mean()


def naive_crepa(student, teacher, distance=1, tau=1.0, cumulative=False):
    """CREPA (arXiv 2506.09229) frame by frame and token by token in float64, with SimpleTuner's frame matching:
    the longer side keeps frames floor(i (T - 1) / (F - 1)), i = 0..F-1."""
    frames = min(student.shape[1], teacher.shape[1])

    def subsample(e):
        t = e.shape[1]
        return e[:, [i * (t - 1) // max(frames - 1, 1) for i in range(frames)]]

    student, teacher = subsample(student), subsample(teacher.detach())
    batch, _, height, width, _ = student.shape

    def s(b, f, g):  # mean over positions of cos(student frame f, teacher frame g)
        cosines = [
            F.cosine_similarity(student[b, f, y, x].double(), teacher[b, g, y, x].double(), dim=0)
            for y in range(height)
            for x in range(width)
        ]
        return sum(cosines) / len(cosines)

    d_max = min(distance, frames - 1)
    offsets = range(1, d_max + 1) if cumulative else ([d_max] if d_max > 0 else [])
    total = 0
    for b in range(batch):
        per_frame = 0
        for f in range(frames):
            per_frame = per_frame + s(b, f, f)
            for d in offsets:
                per_frame = per_frame + sum(math.exp(-d / tau) * s(b, f, g) for g in (f - d, f + d) if 0 <= g < frames)
        total = total + per_frame / frames
    return -total / batch


def value_and_grad(loss_fn, student, teacher, **kwargs):
    student = student.detach().clone().requires_grad_()
    loss = loss_fn(student, teacher, **kwargs)
    (grad,) = torch.autograd.grad(loss, student)
    return loss.detach(), grad


def assert_rel_close(actual, expected, rtol):
    scale = expected.abs().max().clamp_min(1e-30)
    assert (actual.double() - expected.double()).abs().max() / scale < rtol


def random_mask(batch, frames, height, width, seed):
    """Masks with a different number of queries in every sample, at least one each."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, frames, height, width, generator=g) < torch.linspace(0.1, 0.6, batch).view(-1, 1, 1, 1)
    mask[:, 0, 0, 0] = True
    return mask


@pytest.mark.parametrize("shape", [(1, 2, 2, 3, 8), (2, 4, 3, 5, 16), (3, 3, 4, 4, 12)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_tsa_matches_naive_formula(shape, masked, chunk_size):
    g = torch.Generator().manual_seed(sum(shape))
    student, teacher = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    mask = random_mask(*shape[:4], seed=len(shape)) if masked else None
    if masked:
        assert len(set(mask.flatten(1).sum(1).tolist())) == shape[0]  # query counts differ per sample
    loss, grad = value_and_grad(tsa_loss, student, teacher, tau=0.1, query_mask=mask, chunk_size=chunk_size)
    expected, expected_grad = value_and_grad(naive_tsa, student.double(), teacher, tau=0.1, query_mask=mask)
    assert loss.dtype == torch.float32
    assert_rel_close(loss, expected, 1e-5)
    assert_rel_close(grad, expected_grad, 1e-5)


def test_tsa_tiles_over_key_frames_when_a_query_row_exceeds_the_budget(monkeypatch):
    monkeypatch.setattr(relations, "TILE_ELEMENTS", 20)  # 3 x 5 keys per frame: one frame per tile
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 4, 3, 5, 8, generator=g), torch.randn(2, 4, 3, 5, 8, generator=g)
    mask = random_mask(2, 4, 3, 5, seed=1)
    loss, grad = value_and_grad(tsa_loss, student, teacher, query_mask=mask)
    expected, expected_grad = value_and_grad(naive_tsa, student.double(), teacher, query_mask=mask)
    assert_rel_close(loss, expected, 1e-5)
    assert_rel_close(grad, expected_grad, 1e-5)


def test_tsa_bf16_input_computes_in_fp32():
    g = torch.Generator().manual_seed(3)
    student = torch.randn(2, 3, 4, 4, 16, generator=g).bfloat16()
    teacher = torch.randn(2, 3, 4, 4, 16, generator=g).bfloat16()
    mask = random_mask(2, 3, 4, 4, seed=2)
    loss, grad = value_and_grad(tsa_loss, student, teacher, query_mask=mask)
    expected, expected_grad = value_and_grad(naive_tsa, student.double(), teacher, query_mask=mask)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert_rel_close(loss, expected, 1e-5)  # the math ran in fp32 on the bf16 values
    # The gradient is exact up to its final rounding to bf16 (8 mantissa bits).
    assert torch.allclose(
        grad.float(), expected_grad.float(), rtol=2**-7, atol=1e-3 * expected_grad.abs().max().item()
    )


def test_relations_stay_fp32_under_autocast():
    g = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(2, 3, 4, 4, 16, generator=g), torch.randn(2, 3, 4, 4, 16, generator=g)
    mask = random_mask(2, 3, 4, 4, seed=3)
    expected, expected_grad = value_and_grad(naive_tsa, student.double(), teacher, query_mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grad = value_and_grad(tsa_loss, student, teacher, query_mask=mask)
    assert_rel_close(loss, expected, 1e-5)
    assert_rel_close(grad, expected_grad, 1e-5)


def test_gradient_wrt_student_relations_is_eq10():
    """dL/dR_s[i, f] = (P_s - P_t) / tau / (B |M_b| F) for query rows (Eq. 10), zero for the others.

    Through R = Ē Ē^T that gives dL/dĒ = (G + G^T) Ē; through the L2 normalisation the radial part drops out.
    """
    tau, (batch, frames, height, width, channels) = 0.1, (2, 3, 2, 3, 8)
    g = torch.Generator().manual_seed(5)
    student = torch.randn(batch, frames, height, width, channels, generator=g)
    teacher = torch.randn(batch, frames, height, width, channels, generator=g)
    mask = random_mask(batch, frames, height, width, seed=7)
    _, grad = value_and_grad(tsa_loss, student, teacher, tau=tau, query_mask=mask)

    for b in range(batch):
        e_s = F.normalize(student[b].reshape(-1, channels).double(), dim=-1)
        e_t = F.normalize(teacher[b].reshape(-1, channels).double(), dim=-1)
        p_s = ((e_s @ e_s.T).reshape(-1, frames, height * width) / tau).softmax(-1)
        p_t = ((e_t @ e_t.T).reshape(-1, frames, height * width) / tau).softmax(-1)
        queries = mask[b].reshape(-1)
        g_rel = ((p_s - p_t) / tau).reshape(len(queries), -1) * queries[:, None]
        g_rel = g_rel / (batch * queries.sum() * frames)
        g_hat = (g_rel + g_rel.T) @ e_s
        norm = student[b].reshape(-1, channels).double().norm(dim=-1, keepdim=True)
        expected = (g_hat - (g_hat * e_s).sum(-1, keepdim=True) * e_s) / norm
        assert_rel_close(grad[b].reshape(-1, channels), expected, 1e-5)


def correspondence_features(frames=4, height=4, width=4, channels=32, seed=0):
    """Teacher whose tokens keep their identity across frames; student whose later frames are shuffled."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(height * width, channels, generator=g)
    teacher = base.expand(frames, -1, -1).reshape(1, frames, height, width, channels).clone()
    student = teacher.clone()
    for f in range(1, frames):
        student[0, f] = base[torch.randperm(height * width, generator=g)].reshape(height, width, channels)
    return student, teacher


def test_tsa_is_zero_iff_correspondences_agree():
    student, teacher = correspondence_features()
    assert tsa_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert tsa_loss(student, teacher).item() > 0.1


def test_lower_temperature_sharpens_correspondences():
    """Fig. 3: lowering tau turns object-level into point-level correspondences, so a misplaced match (a wrong
    motion) costs more and more while the teacher's matching distribution itself gets more peaked."""
    student, teacher = correspondence_features()
    losses = [tsa_loss(student, teacher, tau=tau).item() for tau in (1.0, 0.5, 0.1, 0.05)]
    assert all(a < b for a, b in zip(losses, losses[1:]))
    # Against a student whose tokens are all equal (uniform Q over the H*W keys of a frame), the loss is
    # KL(P || U) = log(HW) - H(P): the teacher's entropy, read through tsa_loss, falls with tau.
    batch, frames, height, width, channels = teacher.shape
    uniform = torch.ones_like(teacher)
    taus = (1.0, 0.5, 0.1, 0.05)
    entropies = [math.log(height * width) - tsa_loss(uniform, teacher, tau=tau).item() for tau in taus]
    assert all(a > b > 0 for a, b in zip(entropies, entropies[1:]))
    e = F.normalize(teacher[0].reshape(-1, channels).double(), dim=-1)
    p = (e @ e.T / 0.1).view(-1, frames, height * width).softmax(-1)  # by hand at tau = 0.1
    assert entropies[2] == pytest.approx(-(p * p.log()).sum(-1).mean().item(), abs=1e-5)


def test_mask_restricts_queries():
    """Eq. 13: the M-TSA loss is the mean of the single-query losses of the selected tokens (keys stay all N)."""
    g = torch.Generator().manual_seed(11)
    student, teacher = torch.randn(1, 3, 2, 2, 8, generator=g), torch.randn(1, 3, 2, 2, 8, generator=g)
    full = torch.ones(1, 3, 2, 2, dtype=torch.bool)
    assert tsa_loss(student, teacher, query_mask=full).item() == pytest.approx(tsa_loss(student, teacher).item())
    rows = []
    for i in range(12):
        one = torch.zeros(12, dtype=torch.bool)
        one[i] = True
        rows.append(tsa_loss(student, teacher, query_mask=one.view(1, 3, 2, 2)).item())
    subset = torch.zeros(12, dtype=torch.bool)
    subset[[1, 4, 9]] = True
    got = tsa_loss(student, teacher, query_mask=subset.view(1, 3, 2, 2)).item()
    assert got == pytest.approx((rows[1] + rows[4] + rows[9]) / 3, rel=1e-5)


def test_no_gradient_into_teacher():
    student = torch.randn(1, 2, 2, 2, 8, requires_grad=True)
    teacher = torch.randn(1, 2, 2, 2, 8, requires_grad=True)
    for loss_fn in (tsa_loss, trd_loss, repa_loss):
        loss_fn(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None


def test_tsa_works_with_motion_mask_from_pixels():
    clip = torch.rand(2, 8, 3, 32, 48)
    mask = motion_saliency_mask(clip, tubelet=(2, 16, 16), ratio=0.5)
    student, teacher = torch.randn(2, 4, 2, 3, 8), torch.randn(2, 4, 2, 3, 8)
    loss, grad = value_and_grad(tsa_loss, student, teacher, query_mask=mask)
    expected, expected_grad = value_and_grad(naive_tsa, student.double(), teacher, query_mask=mask)
    assert_rel_close(loss, expected, 1e-5)
    assert_rel_close(grad, expected_grad, 1e-5)


@pytest.mark.parametrize("shape", [(1, 2, 2, 3, 8), (2, 3, 4, 4, 16)])
def test_trd_matches_naive_formula(shape, monkeypatch):
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    expected, expected_grad = value_and_grad(naive_trd, student.double(), teacher, margin=0.1)
    for budget in (2**22, 10):  # one tile per sample, then many
        monkeypatch.setattr(relations, "TILE_ELEMENTS", budget)
        loss, grad = value_and_grad(trd_loss, student, teacher, margin=0.1)
        assert_rel_close(loss, expected, 1e-5)
        assert_rel_close(grad, expected_grad, 1e-4)


def test_repa_is_negative_mean_cosine():
    """REPA by hand on two tokens: cos([3, 4], [4, 3]) = 24 / 25 and cos([1, 0], [-2, 0]) = -1, mean -0.02."""
    student = torch.tensor([[3.0, 4.0], [1.0, 0.0]]).view(1, 2, 1, 1, 2)
    teacher = torch.tensor([[4.0, 3.0], [-2.0, 0.0]]).view(1, 2, 1, 1, 2)
    assert repa_loss(student, teacher).item() == pytest.approx(-(24 / 25 - 1) / 2, rel=1e-6)
    assert repa_loss(teacher, 5 * teacher).item() == pytest.approx(-1.0, rel=1e-6)  # scale-free


@pytest.mark.parametrize(
    "student_frames, teacher_frames, distance, tau, cumulative",
    [
        (5, 5, 1, 1.0, False),
        (5, 5, 2, 0.5, False),
        (5, 5, 3, 2.0, True),
        (4, 4, 0, 1.0, False),
        (3, 3, 5, 1.0, True),
        (4, 11, 1, 1.0, False),
        (7, 4, 2, 1.5, True),
        (6, 16, 1, 0.7, False),
    ],
)
def test_crepa_matches_naive_formula(student_frames, teacher_frames, distance, tau, cumulative):
    g = torch.Generator().manual_seed(student_frames * 100 + teacher_frames)
    student = torch.randn(2, student_frames, 2, 3, 8, generator=g)
    teacher = torch.randn(2, teacher_frames, 2, 3, 8, generator=g)
    kwargs = {"adjacent_distance": distance, "temporal_decay": tau, "cumulative_neighbors": cumulative}
    loss, grad = value_and_grad(crepa_loss, student, teacher, **kwargs)
    naive_kwargs = {"distance": distance, "tau": tau, "cumulative": cumulative}
    expected, expected_grad = value_and_grad(naive_crepa, student.double(), teacher, **naive_kwargs)
    assert loss.dtype == torch.float32
    assert_rel_close(loss, expected, 1e-5)
    assert_rel_close(grad, expected_grad, 1e-5)


def test_crepa_by_hand_and_as_per_frame_repa():
    """Two frames of one token: s(f, g) = cos(student_f, teacher_g); with D = 1, tau = 1 each frame adds its one
    neighbour at e^-1."""
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 1, 2)
    teacher = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(1, 2, 1, 1, 2)
    c = 1 / math.sqrt(2)  # cos([1, 0], [1, 1]) = cos([0, 1], [1, 1])
    # frame 0: s(0, 0) = 1, s(0, 1) = c; frame 1: s(1, 1) = c, s(1, 0) = 0
    expected = -((1 + math.exp(-1) * c) + (c + math.exp(-1) * 0.0)) / 2
    assert crepa_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    features = torch.randn(2, 4, 3, 3, 8), torch.randn(2, 4, 3, 3, 8)
    assert crepa_loss(*features, adjacent_distance=0).item() == pytest.approx(repa_loss(*features).item(), rel=1e-5)


def test_bad_inputs_are_refused_with_the_fix():
    student = torch.randn(1, 2, 2, 2, 8)
    with pytest.raises(GridError, match="same shape"):
        tsa_loss(student, torch.randn(1, 2, 2, 3, 8))
    with pytest.raises(GridError, match="query_mask"):
        tsa_loss(student, student, query_mask=torch.ones(1, 2, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"sample\(s\) \[0\]"):
        tsa_loss(student, student, query_mask=torch.zeros(1, 2, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="tau"):
        tsa_loss(student, student, tau=0.0)
    with pytest.raises(GridError, match="F may differ"):
        crepa_loss(student, torch.randn(1, 3, 2, 3, 8))
    for bad, name in (({"adjacent_distance": -1}, "adjacent_distance"), ({"temporal_decay": 0.0}, "temporal_decay")):
        with pytest.raises(ValueError, match=name):
            crepa_loss(student, student, **bad)


@pytest.mark.parametrize("tau", [1.0, 0.5, 0.03])
def test_tsa_at_other_temperatures_matches_the_naive_formula(tau):
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 3, 2, 3, 8, generator=g), torch.randn(2, 3, 2, 3, 8, generator=g)
    for mask in (None, random_mask(2, 3, 2, 3, seed=1)):
        loss, grad = value_and_grad(tsa_loss, student, teacher, tau=tau, query_mask=mask)
        expected, expected_grad = value_and_grad(naive_tsa, student.double(), teacher, tau=tau, query_mask=mask)
        assert_rel_close(loss, expected, 1e-5)
        assert_rel_close(grad, expected_grad, 1e-4)


@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_trd_at_other_margins_matches_the_naive_formula(margin):
    g = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(2, 3, 2, 3, 8, generator=g), torch.randn(2, 3, 2, 3, 8, generator=g)
    loss, grad = value_and_grad(trd_loss, student, teacher, margin=margin)
    expected, expected_grad = value_and_grad(naive_trd, student.double(), teacher, margin=margin)
    assert_rel_close(loss, expected, 1e-5)
    assert_rel_close(grad, expected_grad, 1e-4)
