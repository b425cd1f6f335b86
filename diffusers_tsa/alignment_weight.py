"""The effective lambda of Eq. 14 at each optimizer step, as a `WeightSchedule` sets it, with the state a resumed run
continues from."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .errors import CheckpointError, UsageError
from .loss_registry import WeightSchedule


class AlignmentWeight:
    """lambda of Eq. 14 over a run: the base weight shaped by a `WeightSchedule` (warm-up, decay, cut-off, and the
    threshold on the EMA of the alignment loss).

    `value` is the weight of the step being trained; `update` ends that step with its alignment loss. The state
    (steps done, the EMA, when the threshold was reached) is a few numbers: `state_dict` / `load_state_dict` and
    `save` / `load` (a JSON file in each checkpoint) carry it exactly, so a resumed run gets the weights it would
    have got.

    Args:
        base (`float`): the weight after the warm-up (`AlignmentConfig.weight`, `--alignment_weight`).
        schedule (`WeightSchedule`, *optional*): how it changes; `None` keeps it constant.
        total_steps (`int`, defaults to 0): the run's optimizer steps, the length of a decay given no
            `weight_decay_steps`.

    Raises:
        `UsageError`: for a negative `base`, or a decay to the end of a run of unknown length (`total_steps` 0).
    """

    #: The file `save` writes in a checkpoint folder.
    FILE_NAME = "alignment_weight.json"

    def __init__(self, base: float, schedule: WeightSchedule | None = None, *, total_steps: int = 0):
        schedule = WeightSchedule() if schedule is None else schedule
        if base < 0:
            raise UsageError(f"`weight={base}` must be >= 0.")
        decays = schedule.weight_schedule != "constant"
        if decays and schedule.weight_decay_steps == 0 and total_steps < 1:
            raise UsageError(
                f"`weight_schedule={schedule.weight_schedule!r}` decays until the last step: give `total_steps`, or "
                "`weight_decay_steps`."
            )
        self.base, self.schedule, self.total_steps = base, schedule, total_steps
        self.steps_done = 0
        self.ema: float | None = None
        self.triggered_at: int | None = None  # the first step after the threshold was reached
        self.triggered_weight: float | None = None  # the weight of the step that reached it

    @property
    def tracks_loss(self) -> bool:
        """Whether `update` needs the step's alignment loss (a threshold action keeps its EMA)."""
        return self.schedule.weight_threshold_action != "off"

    @property
    def value(self) -> float:
        """The weight of step `steps_done + 1`, the one being trained."""
        return self.at(self.steps_done)

    def at(self, done: int) -> float:
        """The weight of the step after `done` steps, given the threshold state as it is now."""
        s = self.schedule
        if s.weight_cutoff_step and done >= s.weight_cutoff_step:
            return 0.0
        if self.triggered_at is not None and done >= self.triggered_at:
            if s.weight_threshold_action == "stop":
                return 0.0
            progress = min((done - self.triggered_at + 1) / s.weight_decay_steps, 1.0)
            return self._decay(self.triggered_weight, progress)
        if done < s.weight_warmup_steps:
            return self.base * (done + 1) / s.weight_warmup_steps
        if s.weight_schedule == "constant":
            return self.base
        length = s.weight_decay_steps or max(self.total_steps - s.weight_warmup_steps, 1)
        return self._decay(self.base, min((done - s.weight_warmup_steps) / length, 1.0))

    def _decay(self, start: float, progress: float) -> float:
        """From `start` to `weight_end` at `progress` in [0, 1], in the schedule's shape (linear for `constant`)."""
        s, end = self.schedule, self.schedule.weight_end
        if s.weight_schedule == "cosine":
            return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2
        if s.weight_schedule == "polynomial":
            return end + (start - end) * (1 - progress) ** s.weight_power
        return start + (end - start) * progress

    def update(self, alignment_loss: float | None) -> None:
        """Ends the step being trained: advances the schedule and, with a threshold action, adds the step's alignment
        loss (`None` for a step whose batches were all skipped) to the EMA and checks the threshold."""
        weight = self.value
        self.steps_done += 1
        s = self.schedule
        if not self.tracks_loss or alignment_loss is None:
            return
        decay = s.weight_ema_decay
        self.ema = alignment_loss if self.ema is None else decay * self.ema + (1 - decay) * alignment_loss
        if self.triggered_at is None and self.ema <= s.weight_threshold:
            self.triggered_at, self.triggered_weight = self.steps_done, weight

    def state_dict(self) -> dict:
        """The state a resumed run continues from (JSON-ready)."""
        return {
            "steps_done": self.steps_done,
            "ema": self.ema,
            "triggered_at": self.triggered_at,
            "triggered_weight": self.triggered_weight,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores what `state_dict` returned."""
        self.steps_done = int(state["steps_done"])
        self.ema, self.triggered_weight = state["ema"], state["triggered_weight"]
        self.triggered_at = state["triggered_at"]

    def save(self, folder: str | os.PathLike) -> None:
        """Writes the state to `folder/alignment_weight.json` (floats as Python writes them: they read back exactly)."""
        Path(folder, self.FILE_NAME).write_text(json.dumps(self.state_dict()))

    def load(self, folder: str | os.PathLike) -> None:
        """Reads what `save` wrote into `folder`.

        Raises:
            `CheckpointError`: when the folder has no such file.
        """
        path = Path(folder, self.FILE_NAME)
        if not path.is_file():
            raise CheckpointError(f"{folder} has no {self.FILE_NAME}: it was not saved by a run with alignment.")
        self.load_state_dict(json.loads(path.read_text()))
