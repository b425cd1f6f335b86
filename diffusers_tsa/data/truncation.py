"""Captions longer than the text encoder's length: counted, with an example, for one log line at the end of a run."""

from __future__ import annotations


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
