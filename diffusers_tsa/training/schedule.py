"""How many optimizer steps and epochs a run trains, from its step or epoch budget and the batches of an epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingSchedule:
    """A run's length, as diffusers' training examples resolve it: `max_train_steps` when given, else
    `num_train_epochs` whole epochs; then as many epochs as those steps need.

    Args:
        steps_per_epoch (`int`): optimizer steps per epoch (`ceil(batches / gradient_accumulation_steps)`).
        max_train_steps (`int`): optimizer steps of the run.
        num_train_epochs (`int`): epochs that hold them.
    """

    steps_per_epoch: int
    max_train_steps: int
    num_train_epochs: int

    @classmethod
    def resolve(
        cls,
        num_batches: int,
        *,
        gradient_accumulation_steps: int = 1,
        max_train_steps: int | None = None,
        num_train_epochs: int = 1,
    ) -> TrainingSchedule:
        """The schedule for `num_batches` batches an epoch (per process, once the data loader is prepared).

        Args:
            num_batches (`int`): batches an epoch.
            gradient_accumulation_steps (`int`, defaults to 1): batches per optimizer step.
            max_train_steps (`int`, *optional*): the step budget; `None` trains `num_train_epochs` epochs.
            num_train_epochs (`int`, defaults to 1): the epoch budget, without a step budget.
        """
        steps_per_epoch = math.ceil(num_batches / gradient_accumulation_steps)
        if max_train_steps is None:
            max_train_steps = num_train_epochs * steps_per_epoch
        return cls(steps_per_epoch, max_train_steps, math.ceil(max_train_steps / steps_per_epoch))
