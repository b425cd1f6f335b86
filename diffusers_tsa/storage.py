"""Where outputs are written: a folder checked writable with room enough before the work that fills it, and a full
disk reported as one line saying what was being written and what is intact."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import DiskFullError, UsageError


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
#: How the writers that do not raise `OSError` say the disk is full: torch's zip writer (`unexpected pos`, `failed
#: writing`) and safetensors' (the OS error inside its message).
_FULL_MESSAGES = ("No space left on device", "StorageFull", "os error 28", "unexpected pos", "failed writing")


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or an error it was raised from) is a write that failed for lack of space."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
            return True
        if any(marker in str(err) for marker in _FULL_MESSAGES):
            return True
        err = err.__cause__ or err.__context__
    return False


def existing_ancestor(path: str | os.PathLike) -> Path:
    """`path`, or its nearest ancestor that exists."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike) -> int:
    """The bytes free on the file system `path` is (or would be) on."""
    return shutil.disk_usage(existing_ancestor(path)).free


def human_bytes(size: float) -> str:
    """`size` bytes as `12.3 MB`."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@contextlib.contextmanager
def disk_full_is_one_line(what: str, where: str | os.PathLike, intact: str) -> Iterator[None]:
    """Turns a write inside the block that fails for lack of space into a `DiskFullError` saying `what` was being
    written `where`, that the disk is full (and how much is free), and what is `intact`; other errors pass."""
    try:
        yield
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise DiskFullError(
            f"The disk is full: writing {what} failed ({human_bytes(free_bytes(where))} free on the file system of "
            f"{where}); {intact}. Free some space and run again."
        ) from None


def check_output_folder(path: str | os.PathLike, argument: str) -> None:
    """Raises `UsageError` naming `argument` when `path` is a file, lies under a file, or is in a folder this process
    cannot write to (a file is created there and removed, which also catches read-only file systems)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"`{argument}={str(path)!r}` is a file, not a folder; give a folder (new or existing).")
    folder = existing_ancestor(path)
    if not folder.is_dir():
        raise UsageError(f"`{argument}={str(path)!r}` lies under {str(folder)!r}, which is a file; give a folder.")
    for probe in {folder, existing_ancestor(path.absolute().parent)}:
        try:
            with tempfile.TemporaryFile(dir=probe):
                pass
        except OSError as err:
            raise UsageError(
                f"`{argument}={str(path)!r}` cannot be written: {probe} refuses a new file ({err.strerror or err}); "
                "give a folder you can write to."
            ) from None


def check_free_space(path: str | os.PathLike, needed: int, argument: str, what: str) -> None:
    """Raises `UsageError` naming `argument` when the file system of `path` has less than `needed` bytes free (with a
    margin of 10 % and 64 MB) for `what`."""
    wanted = int(needed * 1.1) + 64 * 10**6
    free = free_bytes(path)
    if free < wanted:
        raise UsageError(
            f"`{argument}={str(path)!r}` has {human_bytes(free)} free, but {what} needs about {human_bytes(needed)} "
            f"(with a margin, {human_bytes(wanted)}); free some space or write elsewhere."
        )
