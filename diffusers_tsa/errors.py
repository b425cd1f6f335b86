"""Exception types: one per kind of user mistake, each message naming the argument, the value and a fix.

Messages write every argument as it is spelled in Python, in backticks (`depth=99`, `TeacherInput.height=40`), so that
a command-line front end (`diffusers_tsa.cli`) can put the flag that sets it in its place.
"""


class UsageError(ValueError):
    """An argument value (or combination) that cannot work; the message says which and what would."""


class GridError(UsageError):
    """A token grid, clip size or tubelet that does not fit the method's shape rules."""


class ModelLayoutError(UsageError):
    """A model whose blocks cannot be found, a block depth or path that it does not have, or an option that its
    family does not support."""


class CheckpointError(UsageError):
    """A checkpoint that cannot be used: unreadable, of another architecture, or with weights its config does not
    hold (they would be left at random)."""


class DatasetError(UsageError):
    """A dataset, a column, or a caption/video list that cannot be used as given."""


class VideoDecodeError(RuntimeError):
    """A clip that cannot be used: unreadable, truncated, or with fewer frames than asked for.

    Data loaders catch this one type to skip the clip and count it; `source` names the clip and `reason` says why.
    """

    def __init__(self, source: str, reason: str):
        super().__init__(f"Cannot use video {source!r}: {reason}")
        self.source = source
        self.reason = reason


class NonFiniteLossError(UsageError):
    """Training stopped: too many batches in a row had a non-finite loss (a teacher or clip giving NaN, or a
    learning rate too high); the message says what to check."""


class DiskFullError(UsageError):
    """A write that failed because the disk (or the user's quota) is full; the message says what was being written
    and what is intact."""
