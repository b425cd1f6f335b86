"""The training loop's state: unreadable clips, non-finite batches, running means of the loss terms, the schedule."""

import pytest

from diffusers_tsa.cli import translate
from diffusers_tsa.errors import NonFiniteLossError
from diffusers_tsa.training.counters import NonFiniteBatches, RunningMeans, UnreadableClips


def test_unreadable_clips_are_reported_once_and_counted():
    clips = UnreadableClips()
    assert clips.add([("b.mp4", "truncated"), ("a.mp4", "no frames")]) == [
        ("b.mp4", "truncated"),
        ("a.mp4", "no frames"),
    ]
    assert clips.add([("a.mp4", "no frames"), ("c.mp4", "empty")]) == [("c.mp4", "empty")]  # a second epoch
    assert (
        len(clips) == 3 and clips.summary() == "a.mp4, b.mp4, c.mp4" and clips.summary(limit=2) == "a.mp4, b.mp4, ..."
    )


def test_non_finite_batches_stop_training_only_in_a_row():
    batches = NonFiniteBatches(max_in_a_row=2)
    batches.skip()
    batches.finite()
    batches.skip()
    assert (batches.total, batches.in_a_row) == (2, 1)
    with pytest.raises(NonFiniteLossError, match="^2 batches in a row had a non-finite loss") as stop:
        batches.skip()
    assert batches.total == 3
    assert "Raise --max_nonfinite_steps to skip more" in translate(str(stop.value))
    assert "--teacher_dtype float32" in translate(str(stop.value))


def test_running_means_cover_the_batches_since_the_last_reset():
    running = RunningMeans()
    assert running.means() == {} and running.count == 0
    running.add({"diffusion": 1.0, "total": 2.0})
    running.add({"diffusion": 3.0, "total": 6.0})
    assert running.means() == {"diffusion": 2.0, "total": 4.0} and running.count == 2
    running.reset()
    running.add({"diffusion": 5.0})
    assert running.means() == {"diffusion": 5.0}


def test_the_schedule_follows_a_step_budget_or_whole_epochs():
    from diffusers_tsa.training.schedule import TrainingSchedule

    by_epochs = TrainingSchedule.resolve(10, gradient_accumulation_steps=4, num_train_epochs=2)
    assert by_epochs == TrainingSchedule(steps_per_epoch=3, max_train_steps=6, num_train_epochs=2)
    by_steps = TrainingSchedule.resolve(10, gradient_accumulation_steps=4, max_train_steps=7, num_train_epochs=1)
    assert by_steps == TrainingSchedule(steps_per_epoch=3, max_train_steps=7, num_train_epochs=3)


def test_the_probe_leaves_every_random_generator_where_training_left_it():
    """The probe draws its own seeded noise and gives back torch's, numpy's and Python's states: NOVA's forward draws
    its mask ratio from numpy, so a probe that moved numpy's state would change what a probed run trains."""
    import random

    import numpy as np
    import torch

    from diffusers_tsa.training.probe import _forked_rngs

    def draws():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    expected = draws()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    inside = []
    for _ in range(2):
        with _forked_rngs(7, torch.device("cpu")):
            inside.append(draws())
    assert draws() == expected
    assert inside[0] == inside[1]  # the probe's own draws repeat at every probe
