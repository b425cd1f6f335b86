"""One training run (or precompute) per output folder: an exclusive lock held for the run's life.

The lock is the operating system's (`flock`, or `msvcrt.locking` on Windows), so it ends with its process: the lock
of a killed run is free again, and kill-and-resume works. The file also says who holds it, for the message a second
run gets.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import IO

from ..errors import UsageError


LOCK_FILE = ".training.lock"


def _try_lock(file: IO) -> None:
    """Locks `file` exclusively without waiting; raises `OSError` when another process holds it."""
    if os.name == "nt":
        import msvcrt

        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _is_file_at(file: IO, path: Path) -> bool:
    """Whether the open `file` is still the one at `path` (not removed, nor replaced, since it was opened)."""
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


class OutputDirLock:
    """An exclusive lock on `output_dir` (the file `.training.lock` in it), from `acquire` until `release` or the
    end of the process.

    Args:
        output_dir (`str` or `os.PathLike`): the training run's output folder (created if needed).
        purpose (`str`, defaults to `"training run"`): what holds the lock, for the message another one gets
            (`"precompute"` for `python -m diffusers_tsa.features`; both lock the same file, so neither can write
            into a folder the other is writing).
    """

    def __init__(self, output_dir: str | os.PathLike, purpose: str = "training run"):
        self.output_dir = Path(output_dir)
        self.purpose = purpose
        self._file: IO | None = None

    def acquire(self) -> OutputDirLock:
        """Takes the lock, or raises `UsageError` naming the folder and the process that holds it."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / LOCK_FILE
        while True:
            file = open(path, "a+")  # not truncated: it names the holder
            try:
                _try_lock(file)
            except OSError:
                break
            if _is_file_at(file, path):
                return self._hold(file)
            file.close()  # the run that held it ended and removed it between our open and lock: open the new one
        file.seek(0)
        holder, _, purpose = file.read().strip().partition("\n")
        holder, purpose = holder or "another process", purpose or "training run"
        file.close()
        raise UsageError(
            f"`output_dir={str(self.output_dir)!r}` is in use by another {purpose} ({holder}): two runs in "
            "one folder overwrite each other's outputs. Wait for it to end or stop it, or choose another "
            "output folder."
        )

    def _hold(self, file: IO) -> OutputDirLock:
        """Keeps the locked `file` open for the run's life, with the holder written in it."""
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()} on {socket.gethostname()}\n{self.purpose}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        """Gives the lock back and removes its file (a killed run's process ending gives the lock back too, and
        leaves the file for the next run to take)."""
        if self._file is None:
            return
        path = self.output_dir / LOCK_FILE
        if os.name != "nt":  # removed while still locked: a run waiting on it sees that its file is gone
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._file.close()
        self._file = None
        if os.name == "nt":  # Windows removes no open file: removed once closed, unless another run opened it since
            with contextlib.suppress(OSError):
                path.unlink()
