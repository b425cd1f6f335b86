"""`python -m diffusers_tsa.features` and its output folder: checked before the work, locked, written atomically (an
existing dataset survives a failed rerun), a full disk in one line. Disk-full cases use a patched writer."""

import errno
import shutil
from collections import namedtuple

import datasets
import pytest

from diffusers_tsa import storage
from diffusers_tsa.cli import FlagError
from diffusers_tsa.errors import DiskFullError
from diffusers_tsa.features import __main__ as features_main
from diffusers_tsa.features import command as features_command
from diffusers_tsa.teachers import TeacherInput, VideoMAETeacher
from diffusers_tsa.testing import tiny_videomae, write_test_clip
from diffusers_tsa.training import OutputDirLock


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny VideoMAE teacher and a two-clip metadata table."""
    root = tmp_path_factory.mktemp("precompute")
    write_test_clip(root / "a.mp4", num_frames=9, speed=6)
    write_test_clip(root / "b.mp4", num_frames=9, speed=-3, square=16)
    VideoMAETeacher(tiny_videomae(), name="tiny", input=TeacherInput.for_clip(9, 96, 144)).backbone.save_pretrained(
        root / "teacher"
    )
    (root / "metadata.csv").write_text(f"text,video\na,{root / 'a.mp4'}\nb,{root / 'b.mp4'}\n")
    return root


def argv(inputs, out):
    return [
        "--dataset_name", str(inputs / "metadata.csv"), "--teacher_model_name_or_path", str(inputs / "teacher"),
        "--height", "96", "--width", "144", "--max_num_frames", "9", "--output_dir", str(out),
    ]  # fmt: skip


@pytest.fixture
def no_compute(monkeypatch):
    """`precompute` (loading the models, the compute, the write) must not be reached."""

    def reached(*args, **kwargs):
        raise AssertionError("the models were loaded")

    monkeypatch.setattr(features_command, "precompute", reached)


def test_an_output_path_that_is_a_file_is_refused_before_any_model_loads(inputs, tmp_path, no_compute):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(FlagError, match=r"--output_dir='.*out' is a file, not a folder"):
        features_main.main(argv(inputs, tmp_path / "out"))


def test_a_folder_that_cannot_be_written_is_refused_before_any_model_loads(inputs, tmp_path, no_compute, monkeypatch):
    def refused(**kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(storage.tempfile, "TemporaryFile", refused)  # the tests may run as root: simulated
    with pytest.raises(FlagError, match=r"--output_dir='.*out' cannot be written: .* \(Read-only file system\)"):
        features_main.main(argv(inputs, tmp_path / "out"))


def test_a_folder_in_use_is_refused_before_any_model_loads(inputs, tmp_path, no_compute):
    lock = OutputDirLock(tmp_path / "out", purpose="precompute").acquire()
    try:
        with pytest.raises(FlagError, match=r"--output_dir='.*out' is in use by another precompute \(process"):
            features_main.main(argv(inputs, tmp_path / "out"))
    finally:
        lock.release()


def test_too_little_free_space_is_refused_before_any_model_loads(inputs, tmp_path, monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(features_command, "load_teacher", reached)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(FlagError, match=r"--output_dir='.*' has 1.0 MB free, but 2 clips needs about") as err:
        features_main.main(argv(inputs, tmp_path / "out"))
    # The tiny teacher's 4 x 2 x 3 tokens of 32 values in float16, and a mask byte each, for the 2 clips.
    assert f"about {storage.human_bytes(2 * 24 * (2 * 32 + 1))}" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # the folder made for the lock is gone too


def test_a_rerun_that_fills_the_disk_leaves_the_existing_dataset_intact(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    features_main.main(argv(inputs, out))
    before = datasets.load_from_disk(out)["train"].to_dict()
    real_save = datasets.Dataset.save_to_disk

    def fills_the_disk(self, path, **kwargs):
        real_save(self, path, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", fills_the_disk)
    with pytest.raises(DiskFullError) as caught:
        features_main.main([*argv(inputs, out), "--storage_dtype", "float32"])
    message = str(caught.value)
    assert message.startswith("The disk is full: writing the precomputed dataset beside") and "\n" not in message
    assert f"the dataset already in {out} is unchanged" in message
    assert datasets.load_from_disk(out)["train"].to_dict() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folder left


def test_a_rerun_replaces_the_dataset_only_when_complete(inputs, tmp_path):
    out = tmp_path / "out"
    features_main.main(argv(inputs, out))
    features_main.main([*argv(inputs, out), "--storage_dtype", "float32"])
    assert datasets.load_from_disk(out)["train"].features["teacher_features"].dtype == "float32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_rerun_with_no_usable_clip_is_refused_before_any_model_loads_and_leaves_the_dataset_intact(
    inputs, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    features_main.main(argv(inputs, out))
    before = datasets.load_from_disk(out)["train"].to_dict()

    def reached(*args, **kwargs):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(features_command, "load_teacher", reached)
    with pytest.raises(FlagError, match=r"None of the 2 clips can be read, e.g. .*fewer than the 33 required"):
        features_main.main([*argv(inputs, out), "--max_num_frames", "33"])  # longer than the clips
    assert datasets.load_from_disk(out)["train"].to_dict() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
