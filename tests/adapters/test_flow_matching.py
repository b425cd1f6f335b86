"""Flow matching's noise levels: a floor that keeps the `sigma_sqrt` weights bounded, and the direction of
`--flow_logit_mean` (the SD3 paper's, opposite to finetrainers' scheduler-index lookup), stated in `--help`."""

import argparse

import pytest
import torch
from diffusers.training_utils import compute_loss_weighting_for_sd3

from diffusers_tsa.adapters.flow_matching import SIGMA_FLOOR, FlowMatching
from diffusers_tsa.cli import add_model_training_arguments


def test_sigmas_keep_the_floor_and_sigma_sqrt_weights_stay_below_1e6():
    assert SIGMA_FLOOR == 1e-3  # finetrainers' smallest sigma: the last of its scheduler's 1000 levels
    torch.manual_seed(0)
    flow = FlowMatching(weighting_scheme="sigma_sqrt")
    sigmas = flow.sample_sigmas(200_000, "cpu")
    assert sigmas.min() >= SIGMA_FLOOR and sigmas.max() <= 1.0
    weights = compute_loss_weighting_for_sd3("sigma_sqrt", sigmas)
    assert weights.max() <= 1 / SIGMA_FLOOR**2 * (1 + 1e-5)  # 1e6, where a 1e-5 floor allowed 1e10
    assert flow.sigmas(2, "cpu", timesteps=torch.tensor([0, 500])).tolist() == pytest.approx([SIGMA_FLOOR, 0.5])


def test_a_positive_logit_mean_draws_noisier_samples_and_the_help_says_finetrainers_is_the_other_way():
    torch.manual_seed(0)
    noisier = FlowMatching(logit_mean=1.0).sample_sigmas(10_000, "cpu").mean()
    torch.manual_seed(0)
    plain = FlowMatching().sample_sigmas(10_000, "cpu").mean()
    assert noisier > plain + 0.1
    parser = argparse.ArgumentParser()
    add_model_training_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert "positive favours noisier samples" in help_text and "negate a value taken from their configs" in help_text
    assert "sigma is kept >= 1e-3" in help_text
