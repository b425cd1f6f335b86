"""The evaluation commands as the repository runs them, `python -m eval.<command>` from its root: each runs the
command of `diffusers_tsa.eval` (which an installed package runs as `python -m diffusers_tsa.eval.<command>`).
"""
