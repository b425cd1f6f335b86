"""Checks that a training run's model card works as written: its "Use it" code runs, on the run's output folder and on
the Hub repository it was pushed to (read from a Hub cache, offline)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ..adapters import GenerationSettings, ModelAdapter
from ..training import save_model_card


#: The Hub repository `check_card_code` writes its second card for.
REPO_ID = "your-name/tiny-tsa"
#: The prompt of the cards' example.
PROMPT = "a white square moves right"


def card_code(readme: Path) -> str:
    """The only ```py block of the model card `readme`."""
    (code,) = re.findall(r"^```py\n(.*?)^```$", Path(readme).read_text(), re.S | re.M)
    return code


def publish_to_cache(folder: Path, cache: Path, repo_id: str) -> None:
    """Lays `folder` out in the Hub cache `cache` as the main revision of `repo_id`, where Hub downloads find it
    offline."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


#: Runs the `use_it.py` of each folder given, in that folder, as `python use_it.py` would.
_RUN_CARDS = """import os, runpy, sys

for folder in sys.argv[1:]:
    os.chdir(folder)
    runpy.run_path("use_it.py", run_name="__main__")
"""


def run_card_code(
    cards: Sequence[tuple[Path, Path]],
    *,
    python: tuple[str, ...] = (sys.executable,),
    env: dict | None = None,
    cache: Path | None = None,
) -> None:
    """Runs the code of model cards as written, offline, each in a new folder where it must write its video; one
    process runs them one after the other (each as `__main__`, from its folder), to start Python and import the
    libraries once.

    Args:
        cards (`Sequence[tuple[Path, Path]]`): (model card, folder to create and run in) pairs; each card's code writes
            `output.mp4` in its folder.
        python (`tuple[str, ...]`, defaults to `(sys.executable,)`): what runs a Python file (e.g. with `-m` a module
            that prepares the process first).
        env (`dict`, *optional*): environment variables added to this process's.
        cache (`Path`, *optional*): the Hub cache the code reads Hub repositories from.
    """
    for readme, run in cards:
        run.mkdir()
        (run / "use_it.py").write_text(card_code(readme))
    driver = cards[0][1].parent / "run_cards.py"
    driver.write_text(_RUN_CARDS)
    hub = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **({"HF_HUB_CACHE": str(cache)} if cache else {})}
    result = subprocess.run(
        [*python, str(driver), *(str(run.resolve()) for _, run in cards)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {}), **hub},
    )
    codes = "\n".join(card_code(readme) for readme, _ in cards)
    assert result.returncode == 0, f"{codes}\n{result.stderr[-3000:]}"
    assert all((run / "output.mp4").stat().st_size > 0 for _, run in cards)


def write_cards(
    adapter: ModelAdapter,
    training_mode: str,
    settings: GenerationSettings,
    tmp_path: Path,
    *,
    repo_id: str = REPO_ID,
    cache: Path | None = None,
) -> list[tuple[Path, Path]]:
    """Saves `adapter`'s transformer as a run would and writes the run's card once for its folder and once for the Hub
    repository `repo_id` (then laid out in the Hub cache `cache`).

    Args:
        adapter (`ModelAdapter`): the family's adapter, as a training run holds it.
        training_mode (`str`): `"lora"` (a new rank-4 LoRA is added and saved) or `"full"` (every weight).
        settings (`GenerationSettings`): the validation settings the card's code generates with.
        tmp_path (`Path`): an empty folder for the run's output (`out/`), the cards and their run folders.
        repo_id (`str`, defaults to `REPO_ID`): the Hub repository of the second card.
        cache (`Path`, *optional*): the Hub cache; defaults to `tmp_path / "hub-cache"`.

    Returns:
        `list[tuple[Path, Path]]`: (card, run folder) pairs for `run_card_code`; the output folder's `README.md` is
        the Hub repository's card.
    """
    spec, output_dir = adapter.spec, tmp_path / "out"
    if training_mode == "lora":
        adapter.add_lora(4, 4)
        adapter.save_lora_weights(output_dir, adapter.transformer)
    else:
        adapter.save_transformer(output_dir, adapter.transformer)
    cards = []
    for weights, folder in ((str(output_dir), "local"), (repo_id, "hub")):
        readme = save_model_card(
            "tiny-tsa",
            output_dir,
            spec=spec,
            weights=weights,
            training_mode=training_mode,
            hyperparameters={"alignment_loss": "m-tsa", "tsa_temperature": 0.1},
            dataset=None,
            validation_prompts=[PROMPT],
            videos=["validation/final-0-0.mp4"],
            generation=settings,
        )
        assert "TODO" not in readme.read_text()
        card = tmp_path / f"{folder}.md"
        shutil.copy(readme, card)  # the next card overwrites the folder's README.md
        cards.append((card, tmp_path / folder))
    publish_to_cache(output_dir, cache or tmp_path / "hub-cache", repo_id)
    return cards


def check_card_code(
    adapter: ModelAdapter,
    training_mode: str,
    settings: GenerationSettings,
    tmp_path: Path,
    *,
    python: tuple[str, ...] = (sys.executable,),
    env: dict | None = None,
) -> None:
    """Writes a run's cards for its folder and for the Hub repository `REPO_ID` (`write_cards`) and runs each card's
    code as written (`run_card_code`).

    Args:
        adapter (`ModelAdapter`): the family's adapter, as a training run holds it.
        training_mode (`str`): `"lora"` or `"full"`.
        settings (`GenerationSettings`): the validation settings the card's code generates with.
        tmp_path (`Path`): an empty folder for the run's output (`out/`), the Hub cache and the code runs.
        python (`tuple[str, ...]`, defaults to `(sys.executable,)`): what runs the code (see `run_card_code`).
        env (`dict`, *optional*): environment variables of the code's process.
    """
    cards = write_cards(adapter, training_mode, settings, tmp_path)
    run_card_code(cards, python=python, env=env, cache=tmp_path / "hub-cache")
