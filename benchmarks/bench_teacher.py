"""Teacher-side costs at the paper's setting: decoding, teacher throughput, stored bytes per clip.

- decode: `read_video` of a 49-frame 480x720 clip (the mp4 clips of `--videos` when given, else a synthetic one),
  median of repeated reads;
- teacher: a ViT-B-sized VideoMAE (random weights) on 48 frames at 160x240 (grid 24 x 10 x 15, C = 768), clips/s;
- storage: `TeacherFeatures` over the clips, saved with `save_to_disk`, bytes on disk per clip.

Usage: python benchmarks/bench_teacher.py [--videos DIR] [--device cuda] [--dtype bfloat16] [--repeats 3]
Writes benchmarks/results/teacher_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch
from transformers import VideoMAEConfig, VideoMAEModel

from diffusers_tsa.data import ClipSpec, read_video
from diffusers_tsa.features import TeacherFeatures
from diffusers_tsa.teachers import TeacherInput, VideoMAETeacher
from diffusers_tsa.testing import write_test_clip


RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn, repeats: int, sync) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=None, help="A folder of real mp4 clips to decode.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch_size", type=int, default=1, help="Clips per teacher forward.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    spec = ClipSpec()  # 49 frames, 480x720, centre crop

    with tempfile.TemporaryDirectory() as scratch:
        clips = sorted(args.videos.glob("*.mp4")) if args.videos else []
        if not clips:
            clips = [Path(scratch) / "synthetic.mp4"]
            write_test_clip(clips[0], num_frames=49, height=480, width=720, square=96, speed=8)
        decode = [t for clip in clips for t in _timed(lambda c=clip: read_video(c, spec), args.repeats, lambda: None)]

        torch.manual_seed(0)
        backbone = VideoMAEModel(VideoMAEConfig(use_mean_pooling=True, layer_norm_eps=1e-6))  # ViT-B/16, 16 x 224
        teacher = VideoMAETeacher(backbone, name="vit-b-random", input=TeacherInput.for_clip(49, 480, 720))
        teacher.backbone.to(dtype)
        teacher.to(device)
        frames = teacher.prepare(torch.rand(args.batch_size, 49, 3, 480, 720, device=device) * 2 - 1)
        teacher.encode_prepared(frames)  # warm-up
        sync()
        forward = _timed(lambda: teacher.encode_prepared(frames), args.repeats, sync)

        transform = TeacherFeatures(teacher, spec, teacher_batch_size=args.batch_size)
        table = datasets.Dataset.from_dict({"video": [str(c) for c in clips]})
        start = time.perf_counter()
        mapped = transform.map(table, batch_size=len(clips), load_from_cache_file=False)
        precompute = time.perf_counter() - start
        mapped.save_to_disk(Path(scratch) / "features")
        on_disk = sum(f.stat().st_size for f in (Path(scratch) / "features").glob("*.arrow"))

    result = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        },
        "setting": {
            "clip": "49 x 480 x 720",
            "teacher_input": "48 x 160 x 240",
            "grid": list(teacher.grid),
            "hidden_size": teacher.hidden_size,
            "teacher": "VideoMAE ViT-B/16 (random weights)",
            "dtype": args.dtype,
            "batch_size": args.batch_size,
            "clips": [c.name for c in clips],
        },
        "decode_s_per_clip": {"median": statistics.median(decode), "min": min(decode)},
        "teacher_forward_s_per_batch": {"median": statistics.median(forward), "min": min(forward)},
        "teacher_clips_per_s": args.batch_size / statistics.median(forward),
        "precompute_s_per_clip_end_to_end": precompute / len(clips),
        "stored_bytes_per_clip": {"payload": transform.bytes_per_clip, "on_disk": on_disk / len(clips)},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"teacher_{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
