"""The physics experiment, one command (2 CPU cores, about 15 minutes on idle cores):

    python -m benchmarks.physics_toy                      # writes benchmarks/results/physics_toy_cpu.{md,json,png}

1. Renders 48 throws (`scene`): 40 train, 8 held-out initial conditions, with their trajectories.
2. Sets the student's VAE (LTX-Video family, a patch VAE) to reconstruct the clips (`models.pca_vae`), and trains a
   tiny VideoMAE teacher by masked autoencoding; the teacher is saved as a `VideoMAEModel` and loaded back with `load_teacher`, and its
   correspondences on a held-out clip are drawn by `python -m diffusers_tsa.visualize correspondence`.
3. Trains the student's transformer from scratch without alignment (the base), then fine-tunes it from the base with
   each arm (`arms.ARMS`: none, M-TSA, TSA, TRD, REPA, CREPA with the trained teacher, and M-TSA with the oracle
   teacher, `models.OracleTeacher`, whose features are the clips' object maps), same steps, learning rate and data
   order, per seed.
4. Measures each fine-tune on the held-out clips: the probe's top-1 agreement and tempered KL with the trained teacher,
   the top-1 agreement with the oracle's correspondences (does the student's ball follow the ball?), and
   the physics of the videos it generates from the held-out prompts (`physics`), beside the real clips' and the VAE
   reconstructions' physics.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import arms, models, physics, report, scene


RESULTS = Path(__file__).resolve().parents[1] / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Fine-tuning seeds (0 1 2).")
    parser.add_argument("--arms", nargs="+", default=list(arms.ARMS), choices=arms.ARMS, help="The arms (all).")
    parser.add_argument("--teacher_steps", type=int, default=400, help="Masked-autoencoding steps (400).")
    parser.add_argument("--base_steps", type=int, default=5000, help="Steps of the base, no alignment (5000).")
    parser.add_argument("--base_learning_rate", type=float, default=1e-3, help="The base's learning rate (1e-3).")
    parser.add_argument("--steps", type=int, default=300, help="Fine-tuning steps of each arm (300).")
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="Fine-tuning learning rate (5e-4).")
    parser.add_argument("--alignment_weight", type=float, default=0.5, help="lambda of every alignment arm (0.5).")
    parser.add_argument("--batch_size", type=int, default=8, help="Clips per step (8).")
    parser.add_argument("--sample_steps", type=int, default=20, help="Sampling steps of the generated clips (20).")
    parser.add_argument("--num_threads", type=int, default=2, help="torch CPU threads (2).")
    parser.add_argument("--work_dir", default=None, help="Where the models go (a temporary folder).")
    parser.add_argument("--results_dir", default=str(RESULTS), help="Where the table and figure go.")
    parser.add_argument("--name", default="physics_toy_cpu", help="File stem of the results (physics_toy_cpu).")
    return parser.parse_args(argv)


def log(start: float, message: str) -> None:
    print(f"[physics_toy {time.perf_counter() - start:6.0f} s] {message}", flush=True)


def mean_physics(frames: np.ndarray, true_area: float) -> dict[str, float]:
    """The physics metric averaged over clips (`(B, T, H, W, 3)` uint8), NaN tracks (too few detections) left out
    of the track and g means but counted in `exists`."""
    rows = [physics.clip_physics(f, true_area) for f in frames]
    track = [r.track_error for r in rows if not np.isnan(r.track_error)]
    gravity = [abs(r.gravity - scene.GRAVITY) for r in rows if not np.isnan(r.gravity)]
    return {
        "track_error": float(np.mean(track)) if track else float("nan"),
        "gravity_error": float(np.mean(gravity)) if gravity else float("nan"),
        "exists": float(np.mean([r.exists for r in rows])),
        "tracked_clips": len(track),
    }


def correspondence_picture(work: Path, teacher_dir: Path, clip: np.ndarray, results: Path, name: str) -> Path | None:
    """The trained teacher's correspondences on one held-out clip, drawn by `python -m diffusers_tsa.visualize`."""
    import imageio

    video = work / "held-out.mp4"
    imageio.mimwrite(video, list(clip), fps=8, codec="libx264", quality=10, macro_block_size=1)
    command = [
        sys.executable, "-m", "diffusers_tsa.visualize", "correspondence", "--video", str(video),
        "--teacher_model_name_or_path", str(teacher_dir), "--height", str(scene.HEIGHT), "--width", str(scene.WIDTH),
        "--max_num_frames", str(scene.NUM_FRAMES), "--teacher_num_frames", str(models.TEACHER_INPUT.num_frames),
        "--teacher_height", str(scene.HEIGHT), "--teacher_width", str(scene.WIDTH),
        "--output_dir", str(work / "pictures"),
    ]  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    pictures = sorted((work / "pictures").glob("*.png"))
    if not pictures:
        return None
    target = results / f"{name}_teacher_correspondence.png"
    target.write_bytes(pictures[0].read_bytes())
    return target


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.num_threads)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="physics_toy-"))
    work.mkdir(parents=True, exist_ok=True)

    train_throws, held_throws = scene.split()
    train_render = [t.render() for t in train_throws]
    held_render = [t.render() for t in held_throws]
    train_videos = scene.videos([f for f, _ in train_render])
    held_videos = scene.videos([f for f, _ in held_render])
    held_frames = np.stack([f for f, _ in held_render])
    true_area = float(physics.detect(held_frames[0])[1][0])
    log(start, f"{len(train_throws)} train and {len(held_throws)} held-out throws; the ball covers {true_area} px")

    vae = models.pca_vae(train_videos)
    with torch.no_grad():
        pixels = held_videos.permute(0, 2, 1, 3, 4)
        reconstructed = vae.decode(vae.encode(pixels).latent_dist.mean).sample.permute(0, 2, 1, 3, 4)
    reconstruction = mean_physics(scene.frames_of(reconstructed), true_area)
    reconstruction["mse"] = float((reconstructed.clamp(-1, 1) - held_videos).pow(2).mean())
    log(
        start,
        f"VAE set from the principal components of the training patches: held-out reconstructions {reconstruction}",
    )

    teacher_dir = work / "teacher"
    teacher, mae_loss = models.train_teacher(teacher_dir, train_videos, steps=args.teacher_steps, seed=0)
    random_teacher = models.random_teacher(work / "random-teacher", seed=0)
    oracle = models.OracleTeacher(teacher)
    tracking = {}
    for label, t in (("trained", teacher), ("random", random_teacher), ("oracle", oracle)):
        with torch.no_grad():
            features = t.encode(held_videos).float().numpy()
        tracking[label] = float(
            np.mean(
                [
                    physics.token_tracking(f, c, patch=models.TEACHER_PATCH, tubelet=models.TEACHER_TUBELET)
                    for f, (_, c) in zip(features, held_render)
                ]
            )
        )
    log(start, f"teacher trained ({args.teacher_steps} steps, MAE loss {mae_loss:.4f}); ball tracking {tracking}")
    picture = correspondence_picture(work, teacher_dir, held_frames[0], results_dir, args.name)

    adapter = arms.load_student(models.save_student(work / "student", vae, seed=0))
    train_clips = arms.ClipSet.encode(adapter, teacher, train_videos, [t.caption for t in train_throws])
    held_clips = arms.ClipSet.encode(adapter, teacher, held_videos, [t.caption for t in held_throws])
    oracle_train, oracle_held = train_clips.with_teacher(oracle), held_clips.with_teacher(oracle)
    arms.train(
        adapter,
        train_clips,
        loss="none",
        teacher=teacher,
        steps=args.base_steps,
        lr=args.base_learning_rate,
        batch_size=args.batch_size,
        data_seed=1000,
        seed=1000,
    )
    base = arms.snapshot(adapter)
    base_top1, base_kl = arms.agreement(adapter, teacher, held_clips)
    base_oracle_top1 = arms.agreement(adapter, oracle, oracle_held)[0]
    base_physics = mean_physics(
        scene.frames_of(arms.generate(adapter, held_clips.captions, seed=0, steps=args.sample_steps)), true_area
    )
    log(
        start,
        f"base trained ({args.base_steps} steps): top-1 {base_top1:.3f} (oracle {base_oracle_top1:.3f}), "
        f"KL {base_kl:.3f}, {base_physics}",
    )

    per_arm = {arm: {key: [] for key, _, _ in report.METRICS} for arm in args.arms}
    strips = {"real clip": held_frames[0]}
    alignment_losses = {arm: [] for arm in args.arms}
    real = mean_physics(held_frames, true_area)

    def write(seeds_done: list[int]) -> dict:
        """The results of the seeds done so far (written after each seed: a stopped run leaves its largest)."""
        done = {arm: {k: v[: len(seeds_done)] for k, v in metrics.items()} for arm, metrics in per_arm.items()}
        results = {
            "command": "python -m benchmarks.physics_toy " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "settings": {k: v for k, v in vars(args).items() if k not in ("work_dir", "results_dir")},
            "seconds": round(time.perf_counter() - start, 1),
            "threads": torch.get_num_threads(),
            "vae_reconstruction": reconstruction,
            "teacher": {"mae_loss": mae_loss, "ball_tracking": tracking, "grid": list(teacher.grid)},
            "base": {"top1": base_top1, "oracle_top1": base_oracle_top1, "kl": base_kl, **base_physics},
            "alignment_loss_first_last": alignment_losses,
            "per_arm": done,
            "seeds_done": seeds_done,
            "floors": {
                "real held-out clips": real,
                "VAE reconstructions": reconstruction,
                "base (before fine-tuning)": {
                    "top1": base_top1,
                    "oracle_top1": base_oracle_top1,
                    "kl": base_kl,
                    **base_physics,
                },
            },
        }
        (results_dir / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
        png = report.figure(results, strips, results_dir / f"{args.name}.png", held_throws[0].caption)
        (results_dir / f"{args.name}.md").write_text(markdown(results, picture, png))
        log(start, f"wrote {results_dir / args.name}.{{md,json,png}} (seeds {seeds_done})")
        return results

    for seed in args.seeds:
        for arm in args.arms:
            adapter.transformer.load_state_dict(base)
            with_oracle = arm == arms.ORACLE_ARM
            history, _ = arms.train(
                adapter,
                oracle_train if with_oracle else train_clips,
                loss=arms.ORACLE_LOSS if with_oracle else arm,
                teacher=oracle if with_oracle else teacher,
                steps=args.steps,
                lr=args.learning_rate,
                batch_size=args.batch_size,
                data_seed=seed,
                seed=seed,
                weight=args.alignment_weight,
            )
            top1, kl = arms.agreement(adapter, teacher, held_clips)
            generated = scene.frames_of(
                arms.generate(adapter, held_clips.captions, seed=seed, steps=args.sample_steps)
            )
            oracle_top1 = arms.agreement(adapter, oracle, oracle_held)[0]
            measured = {"top1": top1, "oracle_top1": oracle_top1, "kl": kl, **mean_physics(generated, true_area)}
            for key, _, _ in report.METRICS:
                per_arm[arm][key].append(measured[key])
            if history:
                alignment_losses[arm].append([history[0], history[-1]])
            if seed == args.seeds[0]:
                strips[arm] = generated[0]
            log(start, f"seed {seed} {arm}: {measured}")
        results = write(args.seeds[: args.seeds.index(seed) + 1])

    return results


def markdown(results: dict, picture: Path | None, png: Path) -> str:
    s = results["settings"]
    lines = [
        "# Physics toy: does alignment change how generated balls move? (CPU)",
        "",
        f"Command: `{results['command']}` ({results['seconds']:.0f} s on {results['threads']} CPU threads); "
        f"seeds {results['seeds_done']} (of {s['seeds']}), {s['steps']} fine-tuning steps per arm at learning rate {s['learning_rate']} "
        f"from a base of {s['base_steps']} steps, batch {s['batch_size']}, alignment weight {s['alignment_weight']}.",
        "",
        report.table(results),
        "",
        "Mean ± standard deviation over seeds; **≠**: the arm's mean differs from no alignment's by more than the sum "
        "of their standard deviations (≈: within the spread); t: Welch's t statistic against no alignment.",
        "Top-1 agreement and tempered KL compare the student's own block tokens (no projector) with the trained "
        "teacher's on M-TSA's motion queries of the 8 held-out clips at sigma 0.5, the oracle's top-1 the same tokens "
        "with the oracle teacher's (the clips' object maps: a ball token corresponds to the ball in every frame); "
        "the physics columns are measured on clips generated from the 8 held-out prompts. m-tsa-oracle aligns to the "
        "oracle teacher instead of the trained one (an upper bound).",
        "",
        f"Teacher: masked-autoencoding loss {results['teacher']['mae_loss']:.4f}; on held-out clips its tokens follow "
        f"the ball (top-1 of the ball's token in another frame is the ball's token) "
        f"{results['teacher']['ball_tracking']['trained']:.3f} of the time, against "
        f"{results['teacher']['ball_tracking']['random']:.3f} for the same VideoMAE untrained and "
        f"{results['teacher']['ball_tracking']['oracle']:.3f} for the oracle (chance 1/32).",
        f"VAE reconstruction of held-out clips: mse {results['vae_reconstruction']['mse']:.4f}, "
        f"ball found at the right size in {results['vae_reconstruction']['exists']:.3f} of the frames.",
        "",
        f"Figure: `{png.name}`" + (f"; the teacher's correspondences: `{picture.name}`" if picture else "") + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
