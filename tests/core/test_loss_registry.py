"""The loss registry: a loss registered in one place gets its flags, their names in errors, its checks, its model-card
entries and the checks of precomputed targets, and its options reach its function."""

import argparse
import importlib
from dataclasses import dataclass, replace
from types import SimpleNamespace

import pytest
import torch

from diffusers_tsa import (
    ALIGNMENT_LOSSES,
    AlignmentLoss,
    ClipSpec,
    CREPAOptions,
    LossOptions,
    MTSAOptions,
    NoOptions,
    TSAOptions,
    UsageError,
    loss_option,
    register_alignment_loss,
    repa_loss,
    unregister_alignment_loss,
)
from diffusers_tsa.cli import FLAGS, add_alignment_arguments, translate
from diffusers_tsa.features.precomputed import check_precomputed_settings
from diffusers_tsa.training import Alignment, AlignmentConfig, alignment_loss
from diffusers_tsa.training.plan import loss_options


GRID = (3, 2, 3)


@dataclass(frozen=True)
class ScaledOptions(LossOptions):
    scaled_factor: float = loss_option(
        2.0,
        flag="--scaled_factor",
        argument="factor",
        check=(lambda f: f > 0, "must be positive"),
        help="REPA's scale",
    )


def scaled_loss(student, teacher, *, factor):
    return factor * repa_loss(student, teacher)


@pytest.fixture
def scaled():
    """A throwaway loss with one option, registered for one test."""
    yield register_alignment_loss(AlignmentLoss("scaled", scaled_loss, ScaledOptions, "REPA times a factor"))
    unregister_alignment_loss("scaled")


def parse(flags):
    parser = argparse.ArgumentParser()
    add_alignment_arguments(parser)
    return parser, parser.parse_args(flags)


def config_of(loss, options=None):
    return AlignmentConfig(
        loss=loss,
        depth=1,
        student_grid=(4, 2, 3),
        student_width=8,
        teacher_grid=GRID,
        teacher_width=8,
        options=options,
    )


def card_keys(flags):
    """The keys of the training script's model-card table for these flags."""
    script = importlib.import_module("diffusers_tsa.train_text_to_video_tsa")
    args = script.parse_args(["--pretrained_model_name_or_path", "base", "--instance_data_root", "data", *flags])
    loop = importlib.import_module("diffusers_tsa.train_loop")
    return list(loop.card_hyperparameters(args, SimpleNamespace(uses_flow_matching=False), {}))


def test_a_registered_loss_gets_a_flag_a_flag_name_checks_a_card_entry_and_its_function(scaled):
    parser, args = parse(["--alignment_loss", "scaled", "--scaled_factor", "3"])
    help_text = " ".join(parser.format_help().split())
    assert (
        "'scaled' (REPA times a factor), or 'none'" in help_text
        and "--scaled_factor SCALED_FACTOR REPA's scale (2.0)." in help_text
    )
    options = loss_options(args, "scaled")
    assert options == ScaledOptions(scaled_factor=3.0)

    assert FLAGS["scaled_factor"] == "--scaled_factor"
    with pytest.raises(UsageError) as bad:
        loss_options(parse(["--alignment_loss", "scaled", "--scaled_factor", "-1"])[1], "scaled")
    assert translate(str(bad.value)) == "Invalid alignment loss options: --scaled_factor=-1.0 must be positive."

    config = config_of("scaled", options)
    assert config_of("scaled").options == ScaledOptions()
    with pytest.raises(UsageError, match=r"`options=NoOptions\(\)` must be `ScaledOptions` for `loss='scaled'`"):
        config_of("scaled", NoOptions())
    assert card_keys(["--alignment_loss", "scaled"])[:5] == [
        "training_mode",
        "alignment_loss",
        "alignment_depth",
        "alignment_weight",
        "scaled_factor",
    ]

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, *GRID, 8, generator=g), torch.randn(2, *GRID, 8, generator=g)
    expected = 3 * repa_loss(student, teacher)
    torch.testing.assert_close(alignment_loss("scaled", student, teacher, options=options), expected)
    precomputed = replace(config, features_column="teacher_features")
    training = Alignment(precomputed, projector=None, extractor=None)  # `loss` reads the targets from the batch
    torch.testing.assert_close(training.loss(student, {"teacher_features": teacher}), expected)


def test_an_unregistered_loss_leaves_no_flag_behind():
    register_alignment_loss(AlignmentLoss("scaled", scaled_loss, ScaledOptions, "REPA times a factor"))
    assert "scaled_factor" in FLAGS
    unregister_alignment_loss("scaled")
    assert "scaled" not in ALIGNMENT_LOSSES and "scaled_factor" not in FLAGS
    with pytest.raises(SystemExit):
        parse(["--scaled_factor", "3"])


def test_the_built_in_flags_defaults_and_card_entries():
    _, args = parse(["--mask_ratio", "0.3"])
    assert (args.alignment_loss, args.tsa_temperature, args.tsa_mask_ratio) == ("m-tsa", 0.1, 0.3)
    assert (args.crepa_adjacent_distance, args.crepa_temporal_decay, args.crepa_cumulative_neighbors) == (
        1,
        1.0,
        False,
    )
    assert loss_options(args, "m-tsa") == MTSAOptions(temperature=0.1, mask_ratio=0.3)
    assert loss_options(args, "tsa") == TSAOptions(temperature=0.1)
    assert loss_options(args, "trd") == loss_options(args, "repa") == NoOptions()
    flags = {name: FLAGS[name] for name in ("temperature", "mask_ratio", *CREPAOptions.__dataclass_fields__)}
    assert flags == {
        "temperature": "--tsa_temperature",
        "mask_ratio": "--tsa_mask_ratio",
        "crepa_adjacent_distance": "--crepa_adjacent_distance",
        "crepa_temporal_decay": "--crepa_temporal_decay",
        "crepa_cumulative_neighbors": "--crepa_cumulative_neighbors",
    }
    options = {
        loss: [key for key in card_keys(["--alignment_loss", loss]) if key in args] for loss in ALIGNMENT_LOSSES
    }
    options = {loss: [key for key in keys if key.startswith(("tsa_", "crepa_"))] for loss, keys in options.items()}
    assert options == {
        "m-tsa": ["tsa_temperature", "tsa_mask_ratio"],
        "tsa": ["tsa_temperature"],
        "trd": [],
        "repa": [],
        "crepa": ["crepa_adjacent_distance", "crepa_temporal_decay", "crepa_cumulative_neighbors"],
    }


def test_precomputed_targets_are_checked_on_the_options_that_shape_them():
    clip = ClipSpec(height=96, width=144, max_num_frames=9)
    settings = {"clip": vars(clip), "teacher_input": {}, "mask_ratio": 0.5}
    check_precomputed_settings(settings, clip=clip, options=MTSAOptions(mask_ratio=0.5))
    check_precomputed_settings(settings, clip=clip, options=CREPAOptions())  # CREPA reads no mask
    with pytest.raises(UsageError, match=r"made with `mask_ratio=0.5`, but training is given `mask_ratio=0.2`"):
        check_precomputed_settings(settings, clip=clip, options=MTSAOptions())


@dataclass(frozen=True)
class Plain(LossOptions):
    plain: float = 1.0


@dataclass(frozen=True)
class OtherTemperature(LossOptions):
    temperature: float = loss_option(0.5, flag="--other_temperature", help="Another temperature")


@dataclass(frozen=True)
class TakenFlag(LossOptions):
    taken: float = loss_option(0.5, flag="--tsa_temperature", help="A flag of another option")


@dataclass(frozen=True)
class OnByDefault(LossOptions):
    on: bool = loss_option(True, flag="--on", help="On")


@pytest.mark.parametrize(
    "loss, message",
    [
        (AlignmentLoss("tsa", scaled_loss, ScaledOptions, "again"), r"`name='tsa'` is already an alignment loss"),
        (AlignmentLoss("x", scaled_loss, dict, "x"), r"must be a `LossOptions` dataclass"),
        (AlignmentLoss("x", scaled_loss, Plain, "x"), r"`Plain.plain` must be declared with `loss_option"),
        (AlignmentLoss("x", scaled_loss, OtherTemperature, "x"), r"Option `temperature` of loss 'x' is declared"),
        (AlignmentLoss("x", scaled_loss, TakenFlag, "x"), r"flag --tsa_temperature is another option's"),
        (AlignmentLoss("x", scaled_loss, OnByDefault, "x"), r"`on` of loss 'x' is a bool: it must default to `False`"),
        (
            AlignmentLoss("x", scaled_loss, ScaledOptions, "x", masked=True),
            r"is `masked`: its options need the `mask_ratio`",
        ),
    ],
)
def test_registering_refuses_what_the_derived_places_could_not_take(loss, message):
    with pytest.raises(UsageError, match=message):
        register_alignment_loss(loss)
    assert list(ALIGNMENT_LOSSES) == ["m-tsa", "tsa", "trd", "repa", "crepa"]
