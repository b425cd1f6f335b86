"""The model card of a training run: no template boilerplate, and its "Use it" code runs as written, on the run's
output folder and on the Hub repository it was pushed to (read from a Hub cache, offline), for a LoRA and a full
fine-tune. `test_nova_adapter.py` checks NOVA's cards with these helpers."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXPipeline

from diffusers_tsa.adapters import ADAPTERS, GenerationSettings, load_spec
from diffusers_tsa.testing import tiny_cogvideox_components
from diffusers_tsa.training import save_model_card


REPO_ID = "your-name/tiny-tsa"
PROMPT = "a white square moves right"


def card_code(readme: Path) -> str:
    """The card's only ```py block."""
    (code,) = re.findall(r"^```py\n(.*?)^```$", readme.read_text(), re.S | re.M)
    return code


def publish_to_cache(folder: Path, cache: Path, repo_id: str) -> None:
    """Lays `folder` out in the Hub cache `cache` as the main revision of `repo_id`, where Hub downloads find it
    offline."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
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
    """Runs the code of the card `readme` as written with `python`, offline (Hub repositories read from the cache
    `cache`), in the new folder `run`: it must write its video there."""
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


def check_stock_lora_reload(pipe, lora_dir: Path, generate) -> None:
    """A stock pipeline's `load_lora_weights(lora_dir)` restores the run's rank and alpha (4, 4) from the file's
    metadata, with no `set_adapters`, and changes what `generate(pipe)` makes."""
    before = generate(pipe)
    pipe.load_lora_weights(lora_dir)
    config = pipe.transformer.peft_config["default_0"]
    assert (config.r, config.lora_alpha) == (4, 4)
    assert not torch.allclose(generate(pipe), before, atol=1e-4)


def check_card_code(
    adapter,
    training_mode: str,
    settings: GenerationSettings,
    tmp_path: Path,
    *,
    python: tuple[str, ...] = (sys.executable,),
    env: dict | None = None,
) -> None:
    """Saves `adapter`'s transformer (a new LoRA, or every weight) as a run would, writes the run's card once for its
    folder and once for the Hub repository `REPO_ID` (then laid out in a Hub cache), and runs each card's code as
    written (`run_card_code`)."""
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


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("card") / "base"
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(path)
    return path


@pytest.mark.parametrize("training_mode", ["lora", "full"])
def test_cogvideox_card_code_runs_on_the_output_folder_and_on_the_hub_repo(base, tmp_path, training_mode):
    spec = load_spec(base)
    settings = GenerationSettings(num_frames=9, height=96, width=144, num_inference_steps=2)
    check_card_code(ADAPTERS[spec.family].from_pretrained(spec), training_mode, settings, tmp_path)
