"""Checkpoint folders: rotation as diffusers' examples do it, atomic writes, and nothing lost to a kill."""

import errno
from pathlib import Path

import pytest

from diffusers_tsa.errors import DiskFullError
from diffusers_tsa.training import list_checkpoints, save_checkpoint


def writer(content="state"):
    def save_state(folder):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "state.txt").write_text(content)

    return save_state


def save(tmp_path, step, save_state, limit):
    return save_checkpoint(
        tmp_path, step, save_state, total_limit=limit, is_main_process=True, wait_for_everyone=lambda: None
    )


def names(tmp_path):
    return [p.name for p in list_checkpoints(tmp_path)]


@pytest.mark.parametrize("limit", [1, 2])
def test_rotation_keeps_the_newest_limit(tmp_path, limit):
    for step in (2, 4, 6):
        save(tmp_path, step, writer(), limit)
    assert names(tmp_path) == ["checkpoint-4", "checkpoint-6"][-limit:]


def test_a_kill_while_saving_loses_nothing(tmp_path):
    """With `checkpoints_total_limit 1`, the last checkpoint stays until the new one is complete."""
    save(tmp_path, 2, writer(), 1)

    def killed(folder):
        writer()(folder)
        raise KeyboardInterrupt  # the process dies in the middle of `save_state`

    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 4, killed, 1)
    assert names(tmp_path) == ["checkpoint-2"] and (tmp_path / "checkpoint-2" / "state.txt").is_file()
    save(tmp_path, 4, writer(), 1)  # the next save cleans the partial folder up
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-4"]


def test_saving_a_step_again_replaces_it(tmp_path):
    save(tmp_path, 2, writer("old"), None)
    save(tmp_path, 2, writer("new"), None)
    assert names(tmp_path) == ["checkpoint-2"] and (tmp_path / "checkpoint-2" / "state.txt").read_text() == "new"


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1408 vs 1296"),  # torch.save's
    ],
)
def test_a_full_disk_while_saving_is_one_line_naming_the_intact_checkpoint(tmp_path, failure):
    """A patched writer fails as a full disk makes it fail: the error says what was written, that the disk is full
    and which checkpoint is intact; no partial folder is left."""
    save(tmp_path, 2, writer(), None)

    def full(folder):
        writer()(folder)
        raise failure

    with pytest.raises(DiskFullError) as caught:
        save(tmp_path, 4, full, None)
    message = str(caught.value)
    assert "\n" not in message and "writing checkpoint-4 failed" in message and "The disk is full" in message
    assert "checkpoint-2, the newest complete checkpoint, is intact" in message
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2"]


def test_other_errors_while_saving_pass_unchanged(tmp_path):
    def broken(folder):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        save(tmp_path, 2, broken, None)
