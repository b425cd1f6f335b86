"""Preemption: a cluster that stops a job first sends it a signal (SLURM: SIGTERM, or the one `--signal` names); the
training loop then finishes its step, saves a checkpoint and exits, so that a resumed run loses nothing."""

from __future__ import annotations

import signal
from typing import Callable, Iterable

from ..errors import UsageError


def preempted_exit_status(received: signal.Signals) -> int:
    """The exit status of a preempted run: 128 + the signal's number, as a shell reports a process it ended."""
    return 128 + int(received)


def parse_signal(name: str) -> signal.Signals:
    """`SIGUSR1`, `USR1` or `10` -> the signal.

    Raises:
        `UsageError`: naming `preemption_signal` for a name this platform does not have.
    """
    text = name.strip().upper()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        return signal.Signals[text if text.startswith("SIG") else "SIG" + text]
    except (KeyError, ValueError):
        raise UsageError(
            f"`preemption_signal={name!r}` is not a signal of this platform; give e.g. SIGUSR1 or SIGTERM."
        ) from None


class Preemption:
    """Catches `signals` (from `install` on) and remembers the first one received; the training loop asks
    `requested` after each optimizer step.

    Args:
        signals (`Iterable[signal.Signals]`): the signals that mean "stop soon" (SIGTERM, and the user's).
    """

    def __init__(self, signals: Iterable[signal.Signals]):
        self.signals = sorted(set(signals))
        self.received: signal.Signals | None = None

    def install(self) -> Preemption:
        """Replaces the signals' handlers (to be called in the main thread)."""
        for sig in self.signals:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    def requested(self, any_process: Callable[[bool], bool] | None = None) -> bool:
        """Whether a signal was received, on any process when `any_process` (e.g. a gather of the flags) is given:
        every process then stops at the same step."""
        received = self.received is not None
        return any_process(received) if any_process is not None else received
