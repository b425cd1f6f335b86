"""Output folders checked before the work that fills them, and a full disk reported as one line."""

import errno
import shutil
from collections import namedtuple

import pytest

from diffusers_tsa import storage
from diffusers_tsa.errors import DiskFullError, UsageError


def test_a_file_or_a_path_under_a_file_is_refused_naming_the_argument(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"`output_dir='.*file'` is a file, not a folder"):
        storage.check_output_folder(tmp_path / "file", "output_dir")
    with pytest.raises(UsageError, match=r"`output_dir='.*sub'` lies under '.*file', which is a file"):
        storage.check_output_folder(tmp_path / "file" / "sub", "output_dir")
    storage.check_output_folder(tmp_path / "new" / "folder", "output_dir")  # created later: its ancestor is writable


def test_a_folder_that_refuses_a_new_file_is_refused(tmp_path, monkeypatch):
    """A read-only folder (simulated: the tests may run as root, whom permissions do not stop)."""

    def refused(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(storage.tempfile, "TemporaryFile", refused)
    with pytest.raises(UsageError, match=r"`output_dir='.*'` cannot be written: .* refuses a new file"):
        storage.check_output_folder(tmp_path, "output_dir")


def test_too_little_free_space_is_refused_with_both_sizes(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**8, 10**8))
    storage.check_free_space(tmp_path, 10**7, "output_dir", "the dataset")
    with pytest.raises(UsageError, match=r"has 100.0 MB free, but the dataset needs about 200.0 MB"):
        storage.check_free_space(tmp_path, 2 * 10**8, "output_dir", "the dataset")


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })'),
    ],
)
def test_a_full_disk_is_one_line(tmp_path, failure):
    with pytest.raises(DiskFullError, match=r"^The disk is full: writing the videos failed \(.* free on the file sys"):
        with storage.disk_full_is_one_line("the videos", tmp_path, "the finished ones are intact"):
            raise failure


def test_other_write_errors_pass(tmp_path):
    with pytest.raises(PermissionError):
        with storage.disk_full_is_one_line("the videos", tmp_path, "nothing"):
            raise PermissionError(errno.EACCES, "Permission denied")
