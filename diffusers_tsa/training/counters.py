"""What the training loop counts across batches: clips it could not read, batches skipped for a non-finite loss, and
the running means of the loss terms over the batches of one optimizer step."""

from __future__ import annotations

from ..errors import DatasetError, NonFiniteLossError


class UnreadableClips:
    """The clips that could not be read, each with why, counted and reported once however often it comes back."""

    def __init__(self):
        self.reasons: dict[str, str] = {}

    def add(self, skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Records a batch's `skipped` `(clip, reason)` pairs; returns those not seen before (to warn about)."""
        new = []
        for clip, reason in skipped:
            if clip not in self.reasons:
                self.reasons[clip] = reason
                new.append((clip, reason))
        return new

    def __len__(self) -> int:
        return len(self.reasons)

    def summary(self, limit: int = 10) -> str:
        """The clips, sorted, the first `limit` of them by name."""
        names = sorted(self.reasons)
        return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


class CorruptRows:
    """The precomputed rows that failed their checksum or could not be read (each counted once); training stops when
    more than `max_share` of the table's rows are among them.

    Args:
        num_rows (`int`): the rows of the training table.
        max_share (`float`): the share of corrupt rows that is still trained around (`max_corrupt_row_share`).
    """

    def __init__(self, num_rows: int, max_share: float):
        self.num_rows, self.max_share = num_rows, max_share
        self.rows: set[str] = set()

    def add(self, rows: list[str]) -> None:
        """Records a batch's `corrupt_rows`; raises `DatasetError` once more than `max_share` of the rows are."""
        self.rows.update(rows)
        if len(self.rows) > self.max_share * self.num_rows:
            raise DatasetError(
                f"{len(self.rows)} of the {self.num_rows} precomputed rows are corrupt (more than "
                f"`max_corrupt_row_share={self.max_share}`), e.g. {sorted(self.rows)[0]}: the precomputed dataset is "
                "damaged; precompute it again with `python -m diffusers_tsa.features`."
            )

    def __len__(self) -> int:
        return len(self.rows)


class NonFiniteBatches:
    """Batches skipped for a non-finite loss: all of them, and those in a row, which stop training at `max_in_a_row`.

    Args:
        max_in_a_row (`int`): consecutive skipped batches that raise `NonFiniteLossError`.
    """

    def __init__(self, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        self.total = 0
        self.in_a_row = 0

    def finite(self) -> None:
        """A batch trained on: the streak ends."""
        self.in_a_row = 0

    def skip(self) -> None:
        """A batch skipped; raises `NonFiniteLossError` when it makes `max_in_a_row` in a row."""
        self.total += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_in_a_row:
            raise NonFiniteLossError(
                f"{self.in_a_row} batches in a row had a non-finite loss (see the warnings): a teacher or a clip that "
                "gives NaN (run the teacher with `teacher_dtype` float32), or a learning rate too high; the last "
                "checkpoint holds the training state before them. Raise `max_nonfinite_steps` to skip more."
            )


class RunningMeans:
    """Means of named values (the loss terms) over the batches added since the last `reset`."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        """Adds one batch's values."""
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def means(self) -> dict[str, float]:
        """Each value's mean over the batches added; empty when none was."""
        return {key: total / self.count for key, total in self.sums.items()} if self.count else {}

    def reset(self) -> None:
        self.sums, self.count = {}, 0
