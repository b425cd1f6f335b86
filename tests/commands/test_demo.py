"""`make demo`'s training run: its alignment probe shows the student's correspondences moving toward the teacher's."""

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from diffusers_tsa.training import read_agreement


DEMO = Path(__file__).resolve().parents[2] / "demo" / "run_demo.py"

pytestmark = pytest.mark.slow


def load_demo():
    spec = importlib.util.spec_from_file_location("run_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_run_brings_the_students_correspondences_toward_the_teachers(tmp_path):
    """The demo's own training command (seed 42, 40 steps), without its validation video: the probe at step 0 and at
    step 40 sees the same clip, noise level and noise. On the demo, the mean tempered KL between the teacher's and the
    student's correspondences falls from 0.41 to 0.16 (2.7x; asserted: at least 2x). The top-1 agreement is not
    asserted: the tiny random teacher's correspondences are nearly flat (its largest probability over a frame's 24
    keys averages 0.09 at tau = 0.1, uniform is 0.04), so their arg-max is noise (0.31 -> 0.28 here)."""
    demo = load_demo()
    paths = demo.prepare(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for command in (demo.precompute_command(paths), demo.training_command(paths, 40, validation_prompt=None)):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
    assert "Inputs = precomputed latents and prompt embeddings" in done.stderr
    start, end = read_agreement(paths["model"])
    assert (start["step"], end["step"]) == (0, 40)
    assert end["tempered_kl"] < start["tempered_kl"] / 2, (start, end)
    validation = paths["model"] / "validation"
    for name in ("motion_mask.png", "correspondence-0.png", "correspondence-40.png"):
        assert (validation / name).stat().st_size > 0
    assert "Alignment probe at step 40: top-1 agreement" in done.stderr
