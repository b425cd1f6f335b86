"""Exception types: one per kind of user mistake, each message naming the argument, the value and a fix."""


class GridError(ValueError):
    """A token grid, clip size or tubelet that does not fit the method's shape rules."""


class ModelLayoutError(ValueError):
    """A model whose blocks cannot be found, or a block depth or path that it does not have."""
