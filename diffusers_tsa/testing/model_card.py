"""Checks that a training run's model card works as written: its "Use it" code runs, on the run's output folder and on
the Hub repository it was pushed to (read from a Hub cache, offline)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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


def run_card_code(
    readme: Path,
    run: Path,
    *,
    python: tuple[str, ...] = (sys.executable,),
    env: dict | None = None,
    cache: Path | None = None,
) -> None:
    """Runs the code of a model card as written, offline, in a new folder, where it must write its video.

    Args:
        readme (`Path`): the model card.
        run (`Path`): the folder to create and run in; the code writes `output.mp4` there.
        python (`tuple[str, ...]`, defaults to `(sys.executable,)`): what runs the code file (e.g. with `-m` a module
            that prepares the process first).
        env (`dict`, *optional*): environment variables added to this process's.
        cache (`Path`, *optional*): the Hub cache the code reads Hub repositories from.
    """
    run.mkdir()
    (run / "use_it.py").write_text(card_code(readme))
    hub = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **({"HF_HUB_CACHE": str(cache)} if cache else {})}
    result = subprocess.run(
        [*python, "use_it.py"],
        cwd=run,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {}), **hub},
    )
    assert result.returncode == 0, f"{card_code(readme)}\n{result.stderr[-3000:]}"
    assert (run / "output.mp4").stat().st_size > 0


def check_card_code(
    adapter: ModelAdapter,
    training_mode: str,
    settings: GenerationSettings,
    tmp_path: Path,
    *,
    python: tuple[str, ...] = (sys.executable,),
    env: dict | None = None,
) -> None:
    """Saves `adapter`'s transformer as a run would, writes the run's card once for its folder and once for the Hub
    repository `REPO_ID` (then laid out in a Hub cache), and runs each card's code as written (`run_card_code`).

    Args:
        adapter (`ModelAdapter`): the family's adapter, as a training run holds it.
        training_mode (`str`): `"lora"` (a new rank-4 LoRA is added and saved) or `"full"` (every weight).
        settings (`GenerationSettings`): the validation settings the card's code generates with.
        tmp_path (`Path`): an empty folder for the run's output (`out/`), the Hub cache and the two code runs.
        python (`tuple[str, ...]`, defaults to `(sys.executable,)`): what runs the code (see `run_card_code`).
        env (`dict`, *optional*): environment variables of the code's process.
    """
    spec, output_dir = adapter.spec, tmp_path / "out"
    if training_mode == "lora":
        adapter.add_lora(4, 4)
        adapter.save_lora_weights(output_dir, adapter.transformer)
    else:
        adapter.save_transformer(output_dir, adapter.transformer)
    for weights in (str(output_dir), REPO_ID):
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
        cache = tmp_path / "hub-cache"
        if weights == REPO_ID:
            publish_to_cache(output_dir, cache, REPO_ID)
        run_card_code(
            readme, tmp_path / ("hub" if weights == REPO_ID else "local"), python=python, env=env, cache=cache
        )
