"""`train_text_to_video_tsa.py --image_to_video` end to end, for every image-to-video family on its tiny offline
checkpoint: a LoRA run (validated from the first training clip's first frame) and a full fine-tune, each reloaded by
the family's stock image-to-video pipeline, whose video from the same image changes with what was trained."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from diffusers import (
    CogVideoXImageToVideoPipeline,
    HunyuanVideo15ImageToVideoPipeline,
    LTX2Pipeline,
    LTXPipeline,
    WanImageToVideoPipeline,
    WanPipeline,
)
from PIL import Image

from diffusers_tsa.adapters import GenerationSettings, TrainingOptions, load_spec
from diffusers_tsa.testing import (
    tiny_cogvideox_components,
    tiny_ltx2_components,
    tiny_ltx_video_components,
    tiny_videomae,
    tiny_wan_components,
    write_test_dataset,
)
from diffusers_tsa.testing.hunyuan_video15 import tiny_hunyuan_video15_components


SCRIPT = Path(__file__).resolve().parents[2] / "train_text_to_video_tsa.py"
PROMPT = "a white square moves right"
LORA_FILE = "pytorch_lora_weights.safetensors"
TEACHER_32X48 = ("--teacher_num_frames", "8", "--teacher_height", "32", "--teacher_width", "48")
#: What `accelerate launch --cpu --num_processes 1 --mixed_precision no --dynamo_backend no` tells the script.
ONE_CPU_PROCESS = {"ACCELERATE_USE_CPU": "true", "ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_DYNAMO_BACKEND": "NO"}

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class I2VFamily:
    """One image-to-video family's tiny checkpoint (`pipeline`, saved as the base), what its runs take, and how a
    user loads its LoRA into the stock pipeline."""

    name: str
    pipeline: Callable
    clip: tuple[int, int, int]
    flags: tuple[str, ...] = TEACHER_32X48
    teacher_kwargs: tuple[tuple[str, int], ...] = ()
    load_lora: Callable = lambda pipe, folder: pipe.load_lora_weights(folder)
    expert: str | None = None


FAMILIES = [
    I2VFamily(
        "cogvideox_i2v",
        lambda: CogVideoXImageToVideoPipeline(**tiny_cogvideox_components(image_to_video=True)),
        (9, 96, 144),
        flags=(),
    ),
    I2VFamily(
        "cogvideox15_i2v",
        lambda: CogVideoXImageToVideoPipeline(**tiny_cogvideox_components(image_to_video=True, patch_size_t=2)),
        (17, 96, 144),
        flags=(),
        teacher_kwargs=(("num_frames", 16),),
    ),
    I2VFamily("wan21_i2v", lambda: WanImageToVideoPipeline(**tiny_wan_components(image_to_video=True)), (9, 64, 96)),
    I2VFamily(
        "wan22_a14b_i2v",
        lambda: WanImageToVideoPipeline(**tiny_wan_components(image_to_video=True, two_experts=True)),
        (9, 64, 96),
        expert="high_noise",
    ),
    I2VFamily("wan22_ti2v", lambda: WanPipeline(**tiny_wan_components(ti2v=True)), (9, 64, 96)),
    I2VFamily(
        "hunyuan_video15_i2v",
        lambda: HunyuanVideo15ImageToVideoPipeline(**tiny_hunyuan_video15_components(image_to_video=True)),
        (9, 32, 48),
        load_lora=lambda pipe, folder: pipe.transformer.load_lora_adapter(folder, weight_name=LORA_FILE),
    ),
    I2VFamily(
        "ltx_video",
        lambda: LTXPipeline(**tiny_ltx_video_components()),
        (9, 64, 96),
        flags=(*TEACHER_32X48, "--validation_fps", "25"),
    ),
    I2VFamily("ltx2", lambda: LTX2Pipeline(**tiny_ltx2_components()), (9, 64, 96)),
]


@pytest.fixture(
    scope="module", params=[pytest.param(f, id=f.name, marks=pytest.mark.xdist_group(f.name)) for f in FAMILIES]
)
def tiny(request, tmp_path_factory):
    """The family's tiny checkpoint, a tiny VideoMAE teacher and two clips, saved to disk."""
    family = request.param
    root = tmp_path_factory.mktemp(family.name)
    family.pipeline().save_pretrained(root / "base")
    tiny_videomae(**dict(family.teacher_kwargs)).save_pretrained(root / "teacher")
    write_test_dataset(root / "data", num_clips=2, caption=PROMPT, num_frames=max(12, family.clip[0]))
    return family, root


def train(tiny, output_dir: Path, *flags: str) -> str:
    """One CPU process of the script with `--image_to_video`, M-TSA and a rank-4 LoRA; returns its log."""
    family, root = tiny
    frames, height, width = family.clip
    command = [
        sys.executable, str(SCRIPT), "--image_to_video",
        "--pretrained_model_name_or_path", str(root / "base"), "--teacher_model_name_or_path", str(root / "teacher"),
        "--instance_data_root", str(root / "data"), "--caption_column", "prompts.txt", "--video_column", "videos.txt",
        "--height", str(height), "--width", str(width), "--max_num_frames", str(frames),
        "--max_sequence_length", "16", "--alignment_loss", "m-tsa", "--projector_hidden_dim", "16",
        "--rank", "4", "--lora_alpha", "4", "--train_batch_size", "2", "--learning_rate", "1e-2",
        "--lr_warmup_steps", "0", "--seed", "0", "--report_to", "none", "--checkpointing_steps", "100",
        "--validation_num_inference_steps", "2", "--output_dir", str(output_dir), *family.flags,
        *(("--expert", family.expert) if family.expert else ()), *flags,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **ONE_CPU_PROCESS}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


def image_and_pipeline(tiny):
    """An 8-bit first frame, the stock image-to-video pipeline of the base checkpoint, and its video from the frame
    (two steps, seed 0) as a function of the pipeline."""
    family, root = tiny
    spec = load_spec(root / "base").for_training(
        TrainingOptions(image_to_video=True, max_sequence_length=16, expert=family.expert)
    )
    pixels = np.random.default_rng(0).integers(0, 256, (family.clip[1], family.clip[2], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    settings = GenerationSettings(*family.clip, num_inference_steps=2, max_sequence_length=16)

    def generate(pipe) -> np.ndarray:
        return spec.generate(pipe, PROMPT, settings, torch.Generator().manual_seed(0), image=image)

    return spec, generate


def test_a_lora_run_validates_from_a_first_frame_and_changes_the_stock_i2v_pipelines_video(tiny, tmp_path):
    out = tmp_path / "out"
    log = train(tiny, out, "--max_train_steps", "2", "--validation_prompt", PROMPT)
    spec, generate = image_and_pipeline(tiny)
    assert "Alignment = m-tsa" in log and (out / LORA_FILE).is_file()
    assert iio.imread(out / "validation" / "final-0-0.mp4").shape == (*tiny[0].clip, 3)
    card = (out / "README.md").read_text()
    assert f"pipe = {spec.image_to_video_pipeline_class_name}.from_pretrained(" in card and "image=image" in card
    # WanImageToVideoPipeline cleans every prompt with ftfy, LTX2ImageToVideoPipeline re-compresses with PyAV.
    assert ("# pip install ftfy" in card) == tiny[0].name.startswith("wan")
    assert ("# pip install av" in card) == (tiny[0].name == "ltx2")

    pipe = spec.pipeline_class.from_pretrained(tiny[1] / "base")
    assert type(pipe).__name__ == spec.image_to_video_pipeline_class_name
    before = generate(pipe)
    tiny[0].load_lora(pipe, out)
    assert not np.allclose(generate(pipe), before, atol=1e-4)


def test_a_full_fine_tune_reloads_in_the_stock_i2v_pipeline_and_changes_its_video(tiny, tmp_path):
    out = tmp_path / "out"
    train(tiny, out, "--training_mode", "full", "--learning_rate", "1e-3", "--max_train_steps", "1")
    spec, generate = image_and_pipeline(tiny)
    base = spec.pipeline_class.from_pretrained(tiny[1] / "base")
    trained = spec.transformer_class.from_pretrained(out, subfolder="transformer")
    tuned = spec.pipeline_class.from_pretrained(tiny[1] / "base", transformer=trained)
    assert not np.allclose(generate(tuned), generate(base), atol=1e-4)
