"""The built wheel, installed alone (no dependencies) in a fresh virtual environment that reaches this environment's
packages through a `.pth` file, runs the README's tiny-model commands from a folder outside the repository."""

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from test_train_script import offline_env


ROOT = Path(__file__).resolve().parents[2]
TINY = ["--height", "96", "--width", "144", "--max_num_frames", "9"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def python(tmp_path_factory):
    """The fresh environment's interpreter, with the wheel built from this checkout installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "diffusers_tsa", source / "diffusers_tsa", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp, source], check=True)
    (wheel,) = tmp.glob("diffusers_tsa-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after the wheel's own
    return python


def run(python, cwd, *args):
    env = {k: v for k, v in offline_env().items() if k != "PYTHONPATH"}
    result = subprocess.run([python, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout


def test_the_installed_wheel_precomputes_trains_and_generates_outside_the_repository(python, tmp_path):
    build = """
import json, sys
from diffusers import CogVideoXPipeline
import diffusers_tsa
from diffusers_tsa.testing import tiny_cogvideox_components, tiny_videomae, write_test_dataset
CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained('tiny/cogvideox')
tiny_videomae().save_pretrained('tiny/videomae')
write_test_dataset('tiny/data', num_clips=4)
print(json.dumps({"package": diffusers_tsa.__path__[0], "path": sys.path}))
"""
    found = json.loads(run(python, tmp_path, "-c", build).splitlines()[-1])
    package = Path(found["package"])
    assert package.is_relative_to(python.parents[1]) and (package / "configs/accelerate/ddp_8gpu.yaml").is_file()
    assert not [p for p in found["path"] if p and Path(p).resolve() == ROOT]  # only the wheel's modules run

    data = ["--instance_data_root", "tiny/data", "--caption_column", "prompts.txt", "--video_column", "videos.txt"]
    models = ["--pretrained_model_name_or_path", "tiny/cogvideox", "--teacher_model_name_or_path", "tiny/videomae"]
    run(python, tmp_path, "-m", "diffusers_tsa.features", *data, *models, *TINY, "--output_dir", "tiny/precomputed")
    launch = ["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--mixed_precision", "no"]
    training = ["--dataset_name", "tiny/precomputed", "--alignment_depth", "1", "--projector_hidden_dim", "16"]
    training += ["--rank", "4", "--lora_alpha", "4", "--train_batch_size", "2", "--max_train_steps", "1"]
    training += ["--lr_warmup_steps", "0", "--seed", "0", "--report_to", "none", "--output_dir", "tiny/lora"]
    run(python, tmp_path, *launch, "--dynamo_backend", "no", "-m", "diffusers_tsa.train_text_to_video_tsa",
        *models[:2], *TINY, *training)  # fmt: skip
    assert (tmp_path / "tiny/lora/pytorch_lora_weights.safetensors").is_file()

    prompts = ["--benchmark", "videophy", "--prompts", "tiny/data/prompts.txt", "--no_upsampling", "--labels", "none"]
    sampling = ["--num_inference_steps", "2", "--num_frames", "9", "--height", "96", "--width", "144"]
    sampling += ["--max_sequence_length", "16", "--dtype", "fp32", "--device", "cpu", "--max_prompts", "1"]
    run(python, tmp_path, "-m", "diffusers_tsa.eval.generate", *models[:2], "--lora", "tiny/lora", *prompts,
        *sampling, "--output_dir", "tiny/videos")  # fmt: skip
    assert len(list((tmp_path / "tiny/videos/videos").glob("*.mp4"))) == 1
    assert (tmp_path / "tiny/videos/manifest.csv").is_file()
