"""The README's patch to diffusers' `examples/cogvideo/train_cogvideox_lora.py`: at most 12 added or changed lines and
our flag names (always checked), and, when `DIFFUSERS_TSA_UPSTREAM_COGVIDEOX_SCRIPT` names a copy of that script (an
optional suite: the file is not part of this project), the patched script trains with M-TSA on the tiny models on the
CPU, logs the alignment term each step, saves the projector with its checkpoints and resumes it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_script import logged_scalars, offline_env

from diffusers_tsa.cli import add_alignment_arguments


ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = os.environ.get("DIFFUSERS_TSA_UPSTREAM_COGVIDEOX_SCRIPT")
EXAMPLE = "examples/cogvideo/train_cogvideox_lora.py"


def readme_diff() -> str:
    blocks = re.findall(r"```diff\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (block,) = [b for b in blocks if EXAMPLE in b]
    return block


def test_the_readme_patch_changes_at_most_12_lines_with_our_flag_names():
    changed = [line for line in readme_diff().splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert len(changed) <= 12
    assert all(line.startswith("+") for line in changed)  # only additions: no re-indented block
    assert "add_alignment_arguments(parser, own_loop=False)" in readme_diff()
    import argparse

    parser = argparse.ArgumentParser()
    add_alignment_arguments(parser, own_loop=False)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert {"--teacher_model_name_or_path", "--alignment_depth", "--projector_hidden_dim", "--alignment_loss"} <= flags


@pytest.mark.optional_suite("diffusers example (DIFFUSERS_TSA_UPSTREAM_COGVIDEOX_SCRIPT)")
@pytest.mark.skipif(UPSTREAM is None, reason="DIFFUSERS_TSA_UPSTREAM_COGVIDEOX_SCRIPT names no copy of the example")
def test_the_patched_example_trains_with_m_tsa_saves_and_resumes_the_projector(tmp_path):
    pytest.importorskip("torchvision", reason="diffusers' example needs torchvision")
    from diffusers import CogVideoXPipeline

    from diffusers_tsa.testing import tiny_cogvideox_components, tiny_videomae, write_test_dataset

    target = tmp_path / EXAMPLE
    target.parent.mkdir(parents=True)
    shutil.copy(UPSTREAM, target)
    subprocess.run(["patch", "-p1"], input=readme_diff(), text=True, cwd=tmp_path, check=True)
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(tmp_path / "tiny" / "cogvideox")
    tiny_videomae().save_pretrained(tmp_path / "tiny" / "videomae")
    write_test_dataset(tmp_path / "tiny" / "data", num_clips=4)

    def launch(*flags):
        command = [
            *(sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"),
            *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", EXAMPLE),
            *("--pretrained_model_name_or_path", "tiny/cogvideox", "--instance_data_root", "tiny/data"),
            *("--caption_column", "prompts.txt", "--video_column", "videos.txt", "--height", "96", "--width", "144"),
            *("--max_num_frames", "9", "--rank", "4", "--lora_alpha", "4", "--train_batch_size", "2"),
            *("--lr_warmup_steps", "0", "--seed", "0", "--checkpointing_steps", "2", "--report_to", "tensorboard"),
            *("--output_dir", "run", "--teacher_model_name_or_path", "tiny/videomae", "--alignment_depth", "1"),
            *("--projector_hidden_dim", "16", *flags),
        ]
        done = subprocess.run(command, cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    launch("--max_train_steps", "4")
    alignment = dict(logged_scalars(tmp_path / "run")["loss/alignment"])
    print("loss/alignment per step:", alignment)
    assert sorted(alignment) == [1, 2, 3, 4] and all(value > 0 for value in alignment.values())
    for step in (2, 4):
        assert (tmp_path / "run" / f"checkpoint-{step}" / "alignment_projector" / "config.json").is_file()
    log = launch("--max_train_steps", "6", "--resume_from_checkpoint", "latest")
    assert "Loaded the alignment projector from run/checkpoint-4" in log
    assert (tmp_path / "run" / "checkpoint-6" / "alignment_projector" / "config.json").is_file()
