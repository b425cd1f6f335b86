"""What differs between the library versions the project supports."""

from __future__ import annotations

import functools


@functools.cache
def dtype_argument() -> str:
    """The keyword diffusers' `from_pretrained` takes the weights dtype as: `dtype` from diffusers 0.40 on, which
    deprecates `torch_dtype`; `torch_dtype` before (NOVA's `diffnext` needs diffusers 0.35)."""
    import diffusers
    from packaging.version import Version

    return "dtype" if Version(diffusers.__version__).release >= (0, 40) else "torch_dtype"
