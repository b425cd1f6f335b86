"""Exception types: one per kind of user mistake, each message naming the argument, the value and a fix."""


class GridError(ValueError):
    """A token grid, clip size or tubelet that does not fit the method's shape rules."""


class ModelLayoutError(ValueError):
    """A model whose blocks cannot be found, or a block depth or path that it does not have."""


class VideoDecodeError(RuntimeError):
    """A clip that cannot be used: unreadable, truncated, or with fewer frames than asked for.

    Data loaders catch this one type to skip the clip and count it; `source` names the clip and `reason` says why.
    """

    def __init__(self, source: str, reason: str):
        super().__init__(f"Cannot use video {source!r}: {reason}")
        self.source = source
        self.reason = reason
