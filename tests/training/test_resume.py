"""A resumed run compared with its checkpoint's record before any weight loads, and preemption's signal handling."""

import os
import signal

import pytest
from test_train_script import parse_script_args

from diffusers_tsa.cli import FlagError, flag_errors
from diffusers_tsa.errors import UsageError
from diffusers_tsa.training import (
    Preemption,
    check_resume,
    parse_signal,
    preempted_exit_status,
    run_settings,
    save_run_settings,
)


BASE = ["--pretrained_model_name_or_path", "org/model", "--instance_data_root", "data", "--rank", "4"]


def recorded(tmp_path, *flags, num_processes=1):
    save_run_settings(tmp_path, run_settings(parse_script_args([*BASE, *flags]), 1, num_processes))
    return tmp_path


def given(*flags, num_processes=1, depth=1):
    return run_settings(parse_script_args([*BASE, *flags]), depth, num_processes)


@pytest.mark.parametrize(
    "flags, num_processes, message",
    [
        (["--rank", "8"], 1, r"was trained with --rank=4, but this run is given --rank=8"),
        (["--training_mode", "full"], 1, r"--lora_alpha=128, --rank=4, --training_mode='lora', but this run is"),
        (["--alignment_loss", "crepa"], 1, r"--alignment_loss='m-tsa'.*given --alignment_loss='crepa'"),
        (["--learning_rate", "1.0"], 1, r"--learning_rate=0.0001, but this run is given --learning_rate=1.0"),
        (["--train_batch_size", "2"], 1, r"--train_batch_size=4, but this run is given --train_batch_size=2"),
        (["--gradient_accumulation_steps", "2"], 1, r"--gradient_accumulation_steps=1, but this run is given"),
        ([], 2, r"accelerate launch --num_processes=1, but this run is given accelerate launch --num_processes=2"),
        (["--seed", "3"], 1, r"--seed=None, but this run is given --seed=3"),
    ],
)
def test_settings_that_shape_the_model_or_the_state_are_refused_naming_the_flag(
    tmp_path, flags, num_processes, message
):
    checkpoint = recorded(tmp_path)
    with pytest.raises(FlagError, match=message), flag_errors():
        check_resume(checkpoint, given(*flags, num_processes=num_processes))


def test_another_aligned_block_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"`alignment_depth=1`.*`alignment_depth=2`"):
        check_resume(recorded(tmp_path), given(depth=2))


def test_settings_a_user_may_change_are_returned_to_be_applied_and_logged(tmp_path):
    checkpoint = recorded(tmp_path, "--max_train_steps", "4")
    changed = check_resume(checkpoint, given("--max_train_steps", "8", "--validation_steps", "2"))
    assert changed == [("max_train_steps", 4, 8), ("validation_steps", None, 2)]
    assert check_resume(checkpoint, given("--max_train_steps", "4")) == []


def test_a_local_model_folder_is_compared_as_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    settings = run_settings(parse_script_args([*BASE, "--pretrained_model_name_or_path", "model"]), 1, 1)
    assert settings["pretrained_model_name_or_path"] == str(tmp_path / "model")


def test_the_preemption_signal_is_caught_and_remembered():
    preemption = Preemption([signal.SIGTERM, parse_signal("USR1")])
    previous = {sig: signal.getsignal(sig) for sig in preemption.signals}
    try:
        preemption.install()
        assert not preemption.requested()
        os.kill(os.getpid(), signal.SIGTERM)  # handled: this process goes on
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preemption.requested() and preemption.received == signal.SIGTERM  # the first one
        assert preemption.requested(lambda flag: False) is False  # as the processes agree
        assert preempted_exit_status(preemption.received) == 143
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_an_unknown_signal_is_refused_naming_the_flag():
    assert parse_signal("SIGUSR2") == parse_signal("usr2") == parse_signal(str(int(signal.SIGUSR2)))
    with pytest.raises(FlagError, match=r"--preemption_signal='SIGNOPE' is not a signal"), flag_errors():
        parse_signal("SIGNOPE")
