"""The output folder's lock: one run per folder, no lock file left behind, no lock taken on a removed file."""

import os
import socket

import pytest

from diffusers_tsa.errors import UsageError
from diffusers_tsa.training import output_lock
from diffusers_tsa.training.output_lock import LOCK_FILE, OutputDirLock


def test_a_released_lock_leaves_no_file_and_frees_the_folder(tmp_path):
    lock = OutputDirLock(tmp_path / "out").acquire()
    holder = f"process {os.getpid()} on {socket.gethostname()}\ntraining run\n"
    assert (tmp_path / "out" / LOCK_FILE).read_text() == holder
    with pytest.raises(UsageError, match=r"`output_dir='.*out'` is in use by another training run \(process"):
        OutputDirLock(tmp_path / "out", purpose="precompute").acquire()
    lock.release()
    assert list((tmp_path / "out").iterdir()) == []
    OutputDirLock(tmp_path / "out", purpose="precompute").acquire().release()


@pytest.mark.skipif(os.name == "nt", reason="Windows removes no open file: a lock file is never removed under a run")
def test_a_lock_file_removed_between_open_and_lock_is_not_held(tmp_path, monkeypatch):
    """The holder ends (and removes the file) after the next run opened it but before that run locks it: a lock on
    the removed file would let a third run take a new one beside it, so the next run locks the file at the path."""
    first = OutputDirLock(tmp_path).acquire()
    lock = output_lock._try_lock
    calls = []

    def first_ends_meanwhile(file):
        if not calls:
            first.release()
        calls.append(file)
        lock(file)

    monkeypatch.setattr(output_lock, "_try_lock", first_ends_meanwhile)
    second = OutputDirLock(tmp_path, purpose="precompute").acquire()
    assert len(calls) == 2  # the removed file, then the new one
    monkeypatch.setattr(output_lock, "_try_lock", lock)
    with pytest.raises(UsageError, match="in use by another precompute"):
        OutputDirLock(tmp_path).acquire()
    second.release()
