"""Captions longer than the text encoder's length: counted, with an example, for one log line at the end of a run."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


class TruncatedCaptions:
    """The captions that were cut to `max_sequence_length` tokens: how many, and the longest one seen."""

    def __init__(self):
        self.count = 0
        self.max_length: int | None = None
        self.example: tuple[str, int] | None = None  # (caption, its tokens)

    def add(self, prompts: list[str], lengths: list[int], max_length: int) -> None:
        """Records the captions of a batch whose token counts `lengths` exceed `max_length`."""
        self.max_length = max_length
        for prompt, length in zip(prompts, lengths):
            if length > max_length:
                self.count += 1
                if self.example is None or length > self.example[1]:
                    self.example = (prompt, length)

    def __len__(self) -> int:
        return self.count

    def summary(self) -> str:
        """One line: the count, the text length and the longest caption (its start)."""
        caption, length = self.example
        shown = caption if len(caption) <= 80 else caption[:77] + "..."
        return (
            f"{self.count} caption(s) were longer than `max_sequence_length={self.max_length}` tokens and were "
            f"truncated to it, e.g. {shown!r} ({length} tokens)."
        )


class PipelineTruncations(logging.Filter):
    """A log filter for a diffusers pipeline's own "input was truncated" warning, which it gives for each prompt
    longer than `max_sequence_length`, with the cut tokens: the first is shown, the others only counted (`count`),
    for one line at the end (`summary`).

    Install it on the handlers of the `diffusers` logger, whose pipeline loggers do not propagate further.
    """

    MARK = "was truncated because `max_sequence_length`"

    def __init__(self):
        super().__init__()
        self.count = 0
        self._last: tuple[logging.LogRecord, bool] | None = None  # each handler asks about the same record

    def filter(self, record: logging.LogRecord) -> bool:
        if self.MARK not in record.getMessage():
            return True
        if self._last is None or self._last[0] is not record:
            self.count += 1
            self._last = (record, self.count == 1)
        return self._last[1]

    @contextlib.contextmanager
    def installed(self) -> Iterator[PipelineTruncations]:
        """The filter on the `diffusers` logger's handlers inside the block."""
        handlers = logging.getLogger("diffusers").handlers
        for handler in handlers:
            handler.addFilter(self)
        try:
            yield self
        finally:
            for handler in handlers:
                handler.removeFilter(self)

    def summary(self, max_sequence_length: int) -> str:
        """One line: how many prompts the pipeline truncated to `max_sequence_length` tokens (its first warning,
        above, shows what it cut)."""
        return (
            f"{self.count} prompt(s) were longer than `max_sequence_length={max_sequence_length}` tokens and were "
            "truncated to it (the pipeline's first warning, above, shows what was cut)."
        )
