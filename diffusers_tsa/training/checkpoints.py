"""Training-state checkpoints: `checkpoint-{step}` folders, rotated, written atomically, found for resuming.

The semantics are those diffusers' example tests expect: with `checkpoints_total_limit = L`, at most L checkpoints
remain, the newest. A folder is written under a temporary name and renamed when complete, and the oldest are pruned
only then, so a run killed while saving never leaves a `checkpoint-*` that cannot load, nor loses the last one.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Callable, Iterable

from ..errors import UsageError
from ..storage import disk_full_is_one_line


logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_PARTIAL_SUFFIX = ".partial"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete `checkpoint-{step}` folders of `output_dir`, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a `checkpoint-{step}` folder was saved at."""
    match = _CHECKPOINT.fullmatch(Path(path).name)
    if match is None:
        raise UsageError(
            f"`resume_from_checkpoint={str(path)!r}` is not a `checkpoint-<step>` folder of a training run."
        )
    return int(match.group(1))


def resolve_checkpoint(output_dir: str | Path, resume_from_checkpoint: str) -> Path | None:
    """The folder `resume_from_checkpoint` names: a path, a name under `output_dir`, or `"latest"` (None when
    there is none yet, so a first run with `latest` starts fresh)."""
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        path = Path(output_dir) / resume_from_checkpoint
    if not path.is_dir():
        raise UsageError(
            f"`resume_from_checkpoint={resume_from_checkpoint!r}`: no such checkpoint folder (nor under "
            f"{output_dir}); pass a `checkpoint-<step>` folder or 'latest'."
        )
    checkpoint_step(path)
    return path


#: What `accelerator.save_state` writes besides the models (their weights are written by the training script).
ACCELERATE_FILES = ("optimizer.bin", "scheduler.bin")


def check_checkpoint(path: str | Path, required: Iterable[str]) -> None:
    """Raises `UsageError` naming each `required` file (relative to the checkpoint) that is missing or empty."""
    bad = [name for name in required if not (Path(path) / name).is_file() or (Path(path) / name).stat().st_size == 0]
    if bad:
        raise UsageError(
            f"`resume_from_checkpoint={str(path)!r}` cannot resume this run: {', '.join(bad)} missing or empty. "
            "Resume from another checkpoint, or start afresh in a new output folder."
        )


def intact_checkpoints(output_dir: str | Path) -> str:
    """What a failed write in `output_dir` leaves intact, for its error: the newest complete checkpoint, if any."""
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        return "no checkpoint of this run was written before it"
    return (
        f"{checkpoints[-1].name}, the newest complete checkpoint, is intact (resume from it with "
        "`resume_from_checkpoint='latest'`)"
    )


def prune_checkpoints(output_dir: str | Path, total_limit: int | None) -> None:
    """Removes the oldest complete checkpoints so that at most `total_limit` remain."""
    if total_limit is None:
        return
    checkpoints = list_checkpoints(output_dir)
    for old in checkpoints[: max(0, len(checkpoints) - total_limit)]:
        logger.info("Removing %s (checkpoints_total_limit=%d)", old.name, total_limit)
        shutil.rmtree(old)


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    save_state: Callable[[str], object],
    *,
    total_limit: int | None,
    is_main_process: bool,
    wait_for_everyone: Callable[[], None],
) -> Path:
    """Writes `checkpoint-{step}` atomically with `save_state` (e.g. `accelerator.save_state`), called on every
    process. The main process first removes partial folders of killed runs; once the new checkpoint is complete and
    renamed into place, it prunes the oldest beyond `total_limit`.

    Raises:
        `DiskFullError`: the disk filled up while writing; the partial folder is removed and the message names the
            newest complete checkpoint, which is intact.
    """
    final = Path(output_dir) / f"checkpoint-{step}"
    partial = final.with_name(final.name + _PARTIAL_SUFFIX)
    if is_main_process:
        for stale in Path(output_dir).glob(f"checkpoint-*{_PARTIAL_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)
    wait_for_everyone()
    with disk_full_is_one_line(f"checkpoint-{step}", output_dir, intact_checkpoints(output_dir)):
        try:
            save_state(str(partial))
        except Exception:
            shutil.rmtree(partial, ignore_errors=True)  # half a checkpoint is never left to resume from
            raise
    wait_for_everyone()
    if is_main_process:
        replaced = final.with_name(final.name + ".replaced")
        if final.exists():  # a resumed run saving a step it had saved before: keep the old one until the swap
            final.rename(replaced)
        partial.rename(final)
        shutil.rmtree(replaced, ignore_errors=True)
        prune_checkpoints(output_dir, total_limit)
    wait_for_everyone()
    return final
