"""Argument errors and `--help` come before any heavy import: each command parses its flags with torch, diffusers,
transformers and datasets not yet imported, and the torch-free name lists its choices come from are the registries'."""

import json
import subprocess
import sys

import pytest
import torch

from diffusers_tsa import losses
from diffusers_tsa.adapters import ADAPTERS
from diffusers_tsa.choices import MODEL_FAMILIES
from diffusers_tsa.loss_registry import ALIGNMENT_LOSSES


HEAVY = ("torch", "diffusers", "transformers", "datasets")
#: Runs a command as `python -m` does and, at exit, writes which heavy modules it imported on the last line.
WRAPPER = f"""
import atexit, json, runpy, sys
atexit.register(lambda: print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr))
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
#: Each command with a bad choice among otherwise valid flags.
BAD_CHOICES = {
    "diffusers_tsa.train_text_to_video_tsa": ["--pretrained_model_name_or_path", "base", "--alignment_loss", "mtsa"],
    "diffusers_tsa.features": ["--output_dir", "out", "--storage_dtype", "float64"],
    "diffusers_tsa.visualize": ["mask", "--video", "v.mp4", "--teacher", "t", "--teacher_frames", "every"],
    "diffusers_tsa.eval.generate": ["--benchmark", "vbench", "--output_dir", "out", "--model_family", "wann"],
}


def run_command(module, *args):
    """The exit status, the stdout, the stderr lines and the heavy modules imported of `python -m module args`."""
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, module, *args], capture_output=True, text=True, timeout=120
    )
    *lines, imported = result.stderr.strip().splitlines()
    return result.returncode, result.stdout, lines, json.loads(imported)


@pytest.mark.parametrize("module", BAD_CHOICES)
def test_a_bad_choice_is_one_error_line_before_any_heavy_import(module):
    status, _, lines, imported = run_command(module, *BAD_CHOICES[module])
    assert status == 2
    assert [line for line in lines if "error:" in line] == [lines[-1]]
    assert "invalid choice" in lines[-1], lines[-1]
    assert imported == []


@pytest.mark.parametrize("module", BAD_CHOICES)
def test_help_comes_before_any_heavy_import(module):
    status, out, _, imported = run_command(module, "--help")
    assert status == 0
    assert out.startswith("usage:")
    assert imported == []


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--alignment_loss", "tsa"], "the following arguments are required: --pretrained_model_name_or_path"),
        (["--pretrained_model_name_or_path", "base", "--alignment_weight", "half"], "invalid float value: 'half'"),
    ],
)
def test_a_missing_flag_or_a_bad_type_stops_training_before_any_heavy_import(flags, message):
    status, _, lines, imported = run_command("diffusers_tsa.train_text_to_video_tsa", *flags)
    assert (status, imported) == (2, [])
    assert lines[-1].endswith(message), lines[-1]


def test_the_torch_free_lists_are_the_registries():
    assert set(MODEL_FAMILIES) == set(ADAPTERS)
    for family, adapter in ADAPTERS.items():
        assert adapter.spec_class.family == family
    # The built-in losses name their functions by import path, imported on the first call.
    student, teacher = torch.randn(2, 1, 2, 2, 3, 4).unbind(0)
    expected = {
        "tsa": float(losses.tsa_loss(student, teacher, tau=0.1)),
        "trd": float(losses.trd_loss(student, teacher)),
        "repa": float(losses.repa_loss(student, teacher)),
    }
    assert {name: float(ALIGNMENT_LOSSES[name](student, teacher)) for name in expected} == pytest.approx(expected)
