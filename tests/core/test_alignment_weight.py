"""The alignment weight schedule: one option set of the loss registry for every loss (flags, flag names in errors,
the model card), the effective weight at each step, and a resume that continues it exactly."""

import argparse
import math

import pytest
from test_loss_registry import card_keys

from diffusers_tsa import ALIGNMENT_LOSSES, AlignmentWeight, UsageError, WeightSchedule
from diffusers_tsa.cli import FLAGS, add_alignment_arguments, translate
from diffusers_tsa.loss_registry import options_of
from diffusers_tsa.training import AlignmentConfig
from diffusers_tsa.training.plan import options_from_flags


def curve(weight, steps, losses=None):
    """The weight of each of `steps` steps, each ended with its alignment loss."""
    values = []
    for step in range(steps):
        values.append(weight.value)
        weight.update(None if losses is None else losses[step])
    return values


def test_each_schedule_option_has_its_flag_its_flag_name_and_a_card_entry_for_every_loss():
    parser = argparse.ArgumentParser()
    add_alignment_arguments(parser)
    args = parser.parse_args(["--alignment_weight_schedule", "cosine", "--alignment_weight_warmup_steps", "5"])
    assert options_from_flags(args, WeightSchedule) == WeightSchedule(weight_schedule="cosine", weight_warmup_steps=5)
    assert options_from_flags(parser.parse_args([]), WeightSchedule) == WeightSchedule()
    for option in options_of(WeightSchedule):
        assert FLAGS[option.name] == option.flag and option.flag.startswith("--alignment_weight_")
    with pytest.raises(UsageError) as bad:
        WeightSchedule(weight_schedule="step", weight_power=0)
    assert translate(str(bad.value)) == (
        "Invalid alignment loss options: --alignment_weight_schedule=step must be one of ('constant', 'linear', "
        "'cosine', 'polynomial'); --alignment_weight_power=0 must be positive."
    )
    for loss in ALIGNMENT_LOSSES:  # the same options, on the card of every loss
        keys = card_keys(["--alignment_loss", loss])
        assert {o.dest for o in options_of(WeightSchedule)} <= set(keys)
    assert "alignment_weight_schedule" not in card_keys(["--alignment_loss", "none"])


def test_the_config_takes_a_constant_schedule_by_default():
    config = AlignmentConfig("repa", 1, (2, 2, 2), 4, (2, 2, 2), 4)
    assert config.schedule == WeightSchedule()
    assert curve(AlignmentWeight(config.weight, config.schedule), 3) == [0.5, 0.5, 0.5]


def test_warm_up_then_each_decay_shape_reaches_the_end_weight():
    warm = {"weight_warmup_steps": 4, "weight_decay_steps": 4, "weight_end": 0.1}
    linear = curve(AlignmentWeight(1.0, WeightSchedule(weight_schedule="linear", **warm)), 10)
    assert linear == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.775, 0.55, 0.325, 0.1, 0.1])
    cosine = curve(AlignmentWeight(1.0, WeightSchedule(weight_schedule="cosine", **warm)), 9)
    assert cosine[4:] == pytest.approx([1.0, 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2, 0.55, 0.2318019, 0.1])
    poly = curve(AlignmentWeight(1.0, WeightSchedule(weight_schedule="polynomial", weight_power=2.0, **warm)), 9)
    assert poly[4:] == pytest.approx([1.0, 0.60625, 0.325, 0.15625, 0.1])
    # No decay length: until the last step of the run.
    to_the_end = AlignmentWeight(1.0, WeightSchedule(weight_schedule="linear"), total_steps=5)
    assert curve(to_the_end, 5) == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    with pytest.raises(UsageError, match="give `total_steps`"):
        AlignmentWeight(1.0, WeightSchedule(weight_schedule="linear"))


def test_a_cutoff_step_and_the_threshold_stop_or_decay_the_term():
    assert curve(AlignmentWeight(0.5, WeightSchedule(weight_cutoff_step=2)), 4) == [0.5, 0.5, 0.0, 0.0]
    losses = [-0.5, -0.8, -0.95, -0.99, -0.2, -0.2]  # the EMA (decay 0) is the loss: it reaches -0.9 at step 3
    stop = WeightSchedule(weight_threshold_action="stop", weight_threshold=-0.9, weight_ema_decay=0.0)
    assert curve(AlignmentWeight(0.5, stop), 6, losses) == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0]  # for good
    decay = WeightSchedule(
        weight_threshold_action="decay", weight_threshold=-0.9, weight_ema_decay=0.0, weight_decay_steps=2
    )
    assert curve(AlignmentWeight(0.5, decay), 6, losses) == pytest.approx([0.5, 0.5, 0.5, 0.25, 0.0, 0.0])
    smooth = AlignmentWeight(0.5, WeightSchedule(weight_threshold_action="stop", weight_threshold=-0.9))
    curve(smooth, 3, [-0.5, -1.0, -1.0])  # the EMA starts at the first loss, then moves 1 % a step
    assert smooth.ema == pytest.approx(0.99 * (0.99 * -0.5 + 0.01 * -1.0) + 0.01 * -1.0) and smooth.value == 0.5
    with pytest.raises(UsageError, match="weight_decay_steps"):
        WeightSchedule(weight_threshold_action="decay")


def test_a_resumed_schedule_continues_bit_identically(tmp_path):
    schedule = WeightSchedule(
        weight_warmup_steps=3,
        weight_schedule="cosine",
        weight_end=0.05,
        weight_threshold_action="decay",
        weight_threshold=-0.7,
        weight_decay_steps=7,
        weight_ema_decay=0.5,
    )
    losses = [-0.1 * k - 0.013 * k * k for k in range(20)]
    straight = curve(AlignmentWeight(0.5, schedule, total_steps=20), 20, losses)
    first = AlignmentWeight(0.5, schedule, total_steps=20)
    head = curve(first, 9, losses)
    first.save(tmp_path)
    resumed = AlignmentWeight(0.5, schedule, total_steps=20)
    resumed.load(tmp_path)
    assert resumed.state_dict() == first.state_dict() and resumed.triggered_at is not None
    assert head + curve(resumed, 11, losses[9:]) == straight  # exactly: floats, not approximately
    with pytest.raises(UsageError, match="alignment_weight.json"):
        AlignmentWeight(0.5).load(tmp_path / "nothing")
