"""The offline demo behind `make demo`: the real training script, end to end, on tiny models and synthetic physics.

1. Builds a tiny `CogVideoXPipeline` and a tiny VideoMAE teacher in code (no download).
2. Renders a small dataset of balls thrown across the frame, falling under gravity and bouncing on the floor, with
   captions that describe them.
3. Precomputes, in one pass over the clips, the student's latents and prompt embeddings and the teacher's features
   (`python -m diffusers_tsa.features`), then runs `train_text_to_video_tsa.py` on them through `accelerate launch`
   with M-TSA (LoRA) on the CPU; its alignment probe measures and draws the student's correspondences against the
   teacher's before and after training.
4. Loads the result with a stock `CogVideoXPipeline` + `load_lora_weights`, generates a clip, and says where the
   model, the model card, the logs, the videos and the pictures are, and how the alignment moved.

    python demo/run_demo.py --output_dir demo_output
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import imageio

from diffusers_tsa.testing.clips import BALL_COLOURS, render_ball


REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH, FRAMES, FPS = 96, 144, 17, 8
PROMPT = "a red ball is thrown hard, falls and bounces on the floor"


def make_dataset(root: Path) -> None:
    """Eight clips and their captions, as the two text files `--instance_data_root` reads."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    captions, videos = [], []
    throws = [(6.0, -4.0, "thrown gently"), (9.0, -7.0, "thrown hard")]
    for i, colour in enumerate(BALL_COLOURS):
        for vx, vy, how in throws:
            name = f"clips/{colour}-{how.split()[1]}.mp4"
            imageio.mimwrite(
                root / name,
                render_ball(colour, vx, vy + 0.5 * i, num_frames=FRAMES, height=HEIGHT, width=WIDTH),
                fps=FPS,
                macro_block_size=1,
            )
            videos.append(name)
            captions.append(f"a {colour} ball is {how}, falls and bounces on the floor")
    (root / "prompts.txt").write_text("\n".join(captions) + "\n")
    (root / "videos.txt").write_text("\n".join(videos) + "\n")


def prepare(out: Path) -> dict[str, Path]:
    """The tiny CogVideoX pipeline, the tiny VideoMAE teacher and the clips, saved under `out`; returns their paths and
    the run folder (emptied: a fresh run, not a resumed one)."""
    from diffusers import CogVideoXPipeline

    from diffusers_tsa.testing import tiny_cogvideox_components, tiny_videomae

    paths = {
        "base": out / "tiny-cogvideox",
        "teacher": out / "tiny-videomae",
        "data": out / "balls",
        "cache": out / "balls-precomputed",
        "model": out / "cogvideox-mtsa-lora",
    }
    for fresh in ("cache", "model"):
        shutil.rmtree(paths[fresh], ignore_errors=True)
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(paths["base"])
    tiny_videomae().save_pretrained(paths["teacher"])
    make_dataset(paths["data"])
    return paths


#: `accelerate launch` on the CPU, one process.
LAUNCH = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--cpu",
    "--num_processes",
    "1",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--num_cpu_threads_per_process",
    str(os.cpu_count() or 1),
]
#: How the clips are read, the same for the precompute and for training.
CLIP_FLAGS = ["--height", str(HEIGHT), "--width", str(WIDTH), "--max_num_frames", "9"]


def precompute_command(paths: dict[str, Path]) -> list:
    """`python -m diffusers_tsa.features ...`: one pass over the clips computes everything the frozen models give,
    the student's latents (the VAE posterior) and prompt embeddings, and the teacher's features and motion masks (the
    teacher sees the clips at 64x96, a 4 x 4 x 6 grid: each frame has 24 keys and 5 M-TSA queries)."""
    return [
        *LAUNCH,
        "-m",
        "diffusers_tsa.features",
        "--instance_data_root",
        str(paths["data"]),
        "--caption_column",
        "prompts.txt",
        "--video_column",
        "videos.txt",
        "--pretrained_model_name_or_path",
        str(paths["base"]),
        "--teacher_model_name_or_path",
        str(paths["teacher"]),
        "--teacher_height",
        "64",
        "--teacher_width",
        "96",
        *CLIP_FLAGS,
        "--output_dir",
        str(paths["cache"]),
    ]


def training_command(paths: dict[str, Path], max_train_steps: int, *, validation_prompt: str | None = PROMPT) -> list:
    """`accelerate launch train_text_to_video_tsa.py ...` with M-TSA (LoRA) on the CPU, on the precomputed dataset:
    neither the VAE encoder, the text encoder nor the teacher runs during training. Validation (the alignment probe,
    and the video of `validation_prompt` when given, for which the VAE and the text encoder are loaded) runs at the
    start and at the end."""
    validation = ["--validation_prompt", validation_prompt, "--validation_num_inference_steps", "4"]
    return [
        *LAUNCH,
        str(REPO / "train_text_to_video_tsa.py"),
        "--pretrained_model_name_or_path",
        str(paths["base"]),
        "--dataset_name",
        str(paths["cache"]),
        *CLIP_FLAGS,
        "--fps",
        str(FPS),
        "--training_mode",
        "lora",
        "--rank",
        "8",
        "--lora_alpha",
        "8",
        "--alignment_loss",
        "m-tsa",
        "--alignment_depth",
        "1",
        "--alignment_weight",
        "0.5",
        "--tsa_temperature",
        "0.1",
        "--tsa_mask_ratio",
        "0.2",
        "--projector_hidden_dim",
        "32",
        "--train_batch_size",
        "2",
        "--max_train_steps",
        str(max_train_steps),
        "--learning_rate",
        "1e-3",
        "--lr_warmup_steps",
        "0",
        "--checkpointing_steps",
        "10",
        "--checkpoints_total_limit",
        "2",
        "--validation_steps",
        str(max_train_steps),
        *(validation if validation_prompt else []),
        "--seed",
        "42",
        "--report_to",
        "tensorboard",
        "--output_dir",
        str(paths["model"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="demo_output", help="Everything the demo writes (demo_output).")
    parser.add_argument("--max_train_steps", type=int, default=40, help="Optimizer steps (40).")
    args = parser.parse_args()

    import torch
    from diffusers import CogVideoXPipeline
    from diffusers.utils import export_to_video

    from diffusers_tsa.training import read_agreement

    start = time.perf_counter()
    paths = prepare(Path(args.output_dir).resolve())
    base, model = paths["base"], paths["model"]
    print(
        f"[demo] tiny CogVideoX in {base}, tiny VideoMAE teacher in {paths['teacher']}, 8 clips in {paths['data']}",
        flush=True,
    )

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for what, command in (
        ("precomputing", precompute_command(paths)),
        ("training", training_command(paths, args.max_train_steps)),
    ):
        print(f"[demo] {what}:", " ".join(command), flush=True)
        subprocess.run(command, check=True, env=env)

    # What a user does next: a stock pipeline, the base weights, and the LoRA with its rank and alpha.
    pipe = CogVideoXPipeline.from_pretrained(base)
    pipe.load_lora_weights(model)
    frames = pipe(
        PROMPT,
        num_frames=9,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=8,
        max_sequence_length=16,
        generator=torch.Generator().manual_seed(0),
    ).frames[0]
    sample = export_to_video(frames, str(paths["model"].parent / "sample.mp4"), fps=FPS)
    probes = read_agreement(model)
    first, last = probes[0], probes[-1]
    validation = model / "validation"
    print(f"\n[demo] done in {time.perf_counter() - start:.0f} s")
    print(f"  precomputed      {paths['cache']}  (latents, prompt embeddings, teacher features: one pass)")
    print(f"  LoRA weights     {model / 'pytorch_lora_weights.safetensors'}")
    print(f"  projector        {model / 'alignment_projector'}")
    print(f"  model card       {model / 'README.md'}")
    print(f"  checkpoints      {', '.join(sorted(p.name for p in model.glob('checkpoint-*')))}")
    print(f"  logs             {model / 'logs'}  (tensorboard --logdir {model / 'logs'})")
    print(f"  validation       {validation}")
    print(f"  reloaded sample  {sample}")
    print(
        f"  alignment        tempered KL {first['tempered_kl']:.3f} at step {first['step']} -> "
        f"{last['tempered_kl']:.3f} at step {last['step']}; top-1 agreement {first['top1_agreement']:.3f} -> "
        f"{last['top1_agreement']:.3f} (agreement.jsonl in validation)"
    )
    before, after = (validation / f"correspondence-{probe['step']}.png" for probe in (first, last))
    print(f"  pictures         {validation / 'motion_mask.png'} (the M-TSA queries), {before} -> {after}")


if __name__ == "__main__":
    main()
