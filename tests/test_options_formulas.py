"""Non-default options against formulas written here: the flow-matching weighting schemes (how sigma is drawn, how
the loss is weighted; SD3's and finetrainers' definitions), the shift and an expert's sigma range, and the flags
that set them."""

import argparse
import math

import pytest
import torch

from diffusers_tsa.adapters.flow_matching import WEIGHTING_SCHEMES, FlowMatching
from diffusers_tsa.cli.flags import add_clip_arguments, add_model_training_arguments
from diffusers_tsa.data import ClipSpec
from diffusers_tsa.training.plan import clip_spec, training_options


#: Noise levels away from both ends, where no floor or clamp applies.
SIGMAS = [0.2, 0.35, 0.5, 0.65, 0.9]


def weight(scheme: str, sigma: float) -> float:
    """SD3's loss weighting (arXiv 2403.03206): 1 / sigma^2 for `sigma_sqrt`, the CosMap density
    2 / (pi (1 - 2 sigma + 2 sigma^2)) for `cosmap`; the others weight every sample by 1."""
    if scheme == "sigma_sqrt":
        return 1 / sigma**2
    if scheme == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigma + 2 * sigma**2))
    return 1.0


@pytest.mark.parametrize("scheme", WEIGHTING_SCHEMES)
def test_the_loss_is_the_weighted_velocity_mse(scheme):
    prediction, latents, noise = (torch.randn(len(SIGMAS), 2, 3, 4, dtype=torch.float64) for _ in range(3))
    loss = FlowMatching(weighting_scheme=scheme).loss(prediction, latents, noise, torch.tensor(SIGMAS))
    per_sample = [
        weight(scheme, s) * ((p - (n - x)) ** 2).mean().item()
        for s, p, x, n in zip(SIGMAS, prediction, latents, noise)
    ]
    assert loss.item() == pytest.approx(sum(per_sample) / len(per_sample), rel=1e-5)


def test_the_weights_differ_where_the_formulas_say():
    # One sample at sigma 0.5 and one at 0.2 with the same error: sigma_sqrt weighs them 4 and 25, cosmap 4/pi and
    # 2 / (0.68 pi); a dropped weighting gives the unweighted mean 1.
    latents, noise, sigmas = torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0.5, 0.2])
    prediction = torch.ones(2, 4)
    losses = {
        s: FlowMatching(weighting_scheme=s).loss(prediction, latents, noise, sigmas).item() for s in WEIGHTING_SCHEMES
    }
    assert losses["sigma_sqrt"] == pytest.approx((4 + 25) / 2)
    assert losses["cosmap"] == pytest.approx((4 / math.pi + 2 / (0.68 * math.pi)) / 2)
    assert losses["logit_normal"] == losses["mode"] == losses["none"] == pytest.approx(1.0)


def draw(scheme: str, batch: int, *, mean=0.0, std=1.0, mode_scale=1.29) -> torch.Tensor:
    """u in (0, 1) as SD3 draws it: sigmoid of N(mean, std) for `logit_normal`; for `mode`, a uniform u mapped to
    1 - u - s (cos^2(pi u / 2) - 1 + u); uniform otherwise (the weighting schemes draw uniformly)."""
    if scheme == "logit_normal":
        return torch.sigmoid(torch.normal(mean=mean, std=std, size=(batch,)))
    u = torch.rand(batch)
    if scheme == "mode":
        return 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    return u


@pytest.mark.parametrize("scheme", WEIGHTING_SCHEMES)
@pytest.mark.parametrize("shift, sigma_range", [(1.0, (0.0, 1.0)), (3.0, (0.0, 1.0)), (5.0, (0.875, 1.0))])
def test_sigmas_are_drawn_by_the_scheme_then_shifted_into_the_range(scheme, shift, sigma_range):
    options = {"logit_mean": 0.3, "logit_std": 0.7, "mode_scale": 0.8}
    flow = FlowMatching(weighting_scheme=scheme, shift=shift, **options)
    torch.manual_seed(7)
    sigmas = flow.sample_sigmas(64, "cpu", sigma_range)
    torch.manual_seed(7)
    u = draw(scheme, 64, mean=0.3, std=0.7, mode_scale=0.8)
    shifted = shift * u / (1 + (shift - 1) * u)
    low, high = sigma_range
    expected = low + (high - low) * shifted
    inside = (expected > 0.05) & (expected < 0.999)  # away from any floor or ceiling of the draw
    assert inside.sum() > 40
    torch.testing.assert_close(sigmas[inside], expected[inside])


def test_the_mean_draws_match_the_formulas():
    torch.manual_seed(0)
    plain = FlowMatching(weighting_scheme="none").sample_sigmas(4096, "cpu").mean().item()
    torch.manual_seed(0)
    mode = FlowMatching(weighting_scheme="mode", mode_scale=1.29).sample_sigmas(4096, "cpu").mean().item()
    torch.manual_seed(0)
    shifted = FlowMatching(weighting_scheme="none", shift=3.0).sample_sigmas(4096, "cpu").mean().item()
    # E[u] = 1/2 for a uniform; the mode map keeps E at 1/2 - s (1/2 - 1 + 1/2) = 1/2; a shift of 3 gives
    # E[3u / (1 + 2u)] = 3/2 - 3 ln(3) / 4 ~ 0.676.
    assert plain == pytest.approx(0.5, abs=0.02) and mode == pytest.approx(0.5, abs=0.02)
    assert shifted == pytest.approx(1.5 - 3 * math.log(3) / 4, abs=0.02)


def test_given_timesteps_set_sigma_exactly():
    flow = FlowMatching(weighting_scheme="cosmap", shift=3.0)
    sigmas = flow.sigmas(3, "cpu", (0.5, 1.0), timesteps=torch.tensor([250, 500, 875]), num_train_timesteps=1000)
    torch.testing.assert_close(sigmas, torch.tensor([0.25, 0.5, 0.875]))


def _parse(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_the_flow_flags_reach_the_objective():
    flags = ["--flow_weighting_scheme", "mode", "--flow_logit_mean", "0.3", "--flow_logit_std", "0.7"]
    flags += ["--flow_mode_scale", "0.8", "--flow_shift", "3", "--expert", "low_noise"]
    args = _parse(add_model_training_arguments, flags)
    args.max_sequence_length = 77
    options = training_options(args)
    assert options.flow_matching == FlowMatching("mode", logit_mean=0.3, logit_std=0.7, mode_scale=0.8, shift=3.0)
    assert (options.expert, options.max_sequence_length) == ("low_noise", 77)


def test_the_clip_flags_reach_the_clip_spec():
    flags = ["--height", "64", "--width", "96", "--max_num_frames", "13", "--skip_frames_start", "2"]
    flags += ["--skip_frames_end", "3", "--video_reshape_mode", "stretch"]
    assert clip_spec(_parse(add_clip_arguments, flags)) == ClipSpec(
        height=64, width=96, max_num_frames=13, skip_frames_start=2, skip_frames_end=3, reshape_mode="stretch"
    )


def test_the_teacher_flags_reach_the_teacher_input():
    from diffusers_tsa.cli.flags import add_teacher_arguments
    from diffusers_tsa.teachers import TeacherInput
    from diffusers_tsa.training.plan import teacher_input

    flags = ["--teacher_num_frames", "4", "--teacher_height", "64", "--teacher_width", "96"]
    args = _parse(add_teacher_arguments, flags)
    from diffusers_tsa.testing import tiny_videomae

    seen = teacher_input(args, ClipSpec(height=96, width=144, max_num_frames=9), tiny_videomae().config)
    assert seen == TeacherInput(num_frames=4, height=64, width=96)  # default: 8 frames at 32 x 48


def test_the_generation_flags_reach_the_pipeline_settings_and_the_seeds():
    from diffusers_tsa.eval import generate
    from diffusers_tsa.eval.prompts import BENCHMARKS, PromptEntry

    flags = ["--benchmark", "videophy", "--pretrained_model_name_or_path", "m", "--output_dir", "o"]
    flags += ["--num_frames", "13", "--height", "64", "--width", "96", "--num_inference_steps", "7"]
    flags += ["--guidance_scale", "2.5", "--use_dynamic_cfg", "--max_sequence_length", "32"]
    args = generate.parse_args(flags)
    spec = argparse.Namespace(resolve_max_sequence_length=lambda value: value)
    settings = generate.generation_settings(args, spec)
    assert (settings.num_frames, settings.height, settings.width) == (13, 64, 96)
    assert (settings.num_inference_steps, settings.guidance_scale, settings.use_dynamic_cfg) == (7, 2.5, True)
    assert settings.max_sequence_length == 32
    entries = [PromptEntry(p, p, "", None, "") for p in ("a ball", "a cup")]
    plan = generate.plan_videos(BENCHMARKS["videophy"], entries, 7, 3)
    assert [(r.prompt, r.seed) for r in plan] == [(p, s) for p in ("a ball", "a cup") for s in (7, 8, 9)]
