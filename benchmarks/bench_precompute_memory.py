"""Precompute memory by number of clips: `ClipTransform.map` writing rows of the real teacher-feature size
(VideoMAEv2 ViT-B on the paper's grid, (24, 10, 15, 768) float16 and its mask: 5.5 MB a row) from a stand-in
transform that decodes nothing and returns random features, then `write_precomputed` and the command's final
check on the saved dataset, so that only what the precompute writes and reads back is measured.

Each count runs in a fresh process that samples its `/proc/self/status` every 20 ms: the peak of RssAnon (the
process's own memory: buffers, lists kept) and of RssFile (pages of memory-mapped files, which the kernel reclaims
when it needs them), and the time per clip. Results go to `benchmarks/results/precompute_memory_cpu.json` and a
Markdown table beside it, with the load average.

    OMP_NUM_THREADS=2 python benchmarks/bench_precompute_memory.py [--clips 64 256 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import datasets
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers_tsa.data import CAPTION, VIDEO, ClipSpec  # noqa: E402
from diffusers_tsa.data.columns import FEATURES_COLUMN, MASK_COLUMN, VALID_COLUMN, true_rows  # noqa: E402
from diffusers_tsa.features.__main__ import write_precomputed  # noqa: E402
from diffusers_tsa.features.transform import ClipTransform  # noqa: E402


RESULTS = Path(__file__).parent / "results"
GRID, WIDTH = (24, 10, 15), 768


class RandomFeatures(ClipTransform):
    """Random teacher features of the real size for every clip, nothing decoded."""

    description = "random teacher features"
    clip = ClipSpec(max_num_frames=48, height=160, width=240, reshape_mode="center")
    video_column = VIDEO
    decode_workers = 1
    valid_column = VALID_COLUMN
    num_invalid = 0
    features = datasets.Features(
        {
            FEATURES_COLUMN: datasets.Array4D((*GRID, WIDTH), "float16"),
            MASK_COLUMN: datasets.Array3D(GRID, "bool"),
            VALID_COLUMN: datasets.Value("bool"),
        }
    )
    bytes_per_clip = np.prod(GRID) * (WIDTH * 2 + 1)

    def settings(self) -> dict:
        return {"grid": list(GRID), "hidden_size": WIDTH}

    def decode(self, sources: list) -> list:
        return [None] * len(sources)

    def columns(self, clips, batch):
        rng = np.random.default_rng(len(batch[VIDEO]))
        return {
            FEATURES_COLUMN: [rng.standard_normal((*GRID, WIDTH), dtype=np.float32).astype(np.float16) for _ in clips],
            MASK_COLUMN: [np.ones(GRID, bool) for _ in clips],
            VALID_COLUMN: [True] * len(clips),
        }


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker(clips: int) -> None:
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            for field in peaks:
                peaks[field] = max(peaks[field], status_kib(field))
            time.sleep(0.02)

    table = datasets.Dataset.from_dict({CAPTION: [""] * clips, VIDEO: [f"{i}.mp4" for i in range(clips)]})
    before = {field: status_kib(field) for field in peaks}
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        mapped = RandomFeatures().map(table, batch_size=8, cache_file_name=os.path.join(folder, "cache.arrow"))
        write_precomputed(mapped, Path(folder) / "out", RandomFeatures.description)  # as the command saves it
        saved = datasets.load_from_disk(Path(folder) / "out")["train"]
        assert len(true_rows(saved, VALID_COLUMN)) == clips  # the command's final check
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    print(
        json.dumps(
            {
                "clips": clips,
                "seconds_per_clip": seconds / clips,
                **{f"{field}_mib": (peaks[field] - before[field]) / 1024 for field in peaks},
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", type=int, default=[64, 256, 1024])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    load_before = os.getloadavg()
    rows = []
    for clips in args.clips:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(clips)], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    load = {"before": load_before, "after": os.getloadavg()}
    command = "OMP_NUM_THREADS=2 python benchmarks/bench_precompute_memory.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "precompute_memory_cpu.json"
    out.write_text(json.dumps({"command": command, "load_average": load, "results": rows}, indent=2))
    lines = [
        f"Precompute memory growth over the start, rows of {RandomFeatures.bytes_per_clip / 1e6:.1f} MB: `{command}`.",
        f"Load average (1, 5, 15 min) before {load['before']}, after {load['after']}.",
        "",
        "| clips | peak RssAnon (MiB) | peak RssFile (MiB) | seconds per clip |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['clips']} | {r['RssAnon_mib']:.0f} | {r['RssFile_mib']:.0f} | {r['seconds_per_clip']:.3f} |"
        for r in rows
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
