"""What reading a precomputed table costs before the first step, by row count: `TrainingClips` (usable rows, empty
captions), the settings check (`precomputed_settings`, run by `plan_training`), the probe's clip lookup (its first
usable rows and a `TrainingClips` over them) and the precompute's final count of usable rows, each against the
row-by-row reference the same work took before (datasets' `table[column]` formats every row in Python;
`table.unique`).

Each table is a small saved table (tiny feature tensors, a 1 KB settings JSON on every row, one row in 64 unusable,
one caption in 16 empty), loaded memory-mapped and concatenated with itself: 1K, 64K and 1M rows without writing
them, each in 16 Arrow blocks (as a precompute's shards merged by `concatenate_datasets` are), so that only the row
count changes; and 1M rows in 1 024 blocks, for what datasets' bookkeeping costs per block. The reference is timed
up to `--reference_rows` (it grows linearly: 64K rows is enough to see it). Results go to
`benchmarks/results/startup_cpu.json` and a Markdown table beside it, with the load average.

    OMP_NUM_THREADS=2 python benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers_tsa.data import CAPTION, VIDEO, ClipSpec  # noqa: E402
from diffusers_tsa.data.columns import (  # noqa: E402
    FEATURES_CHECKSUM_COLUMN,
    FEATURES_COLUMN,
    MASK_COLUMN,
    SETTINGS_COLUMN,
    VALID_COLUMN,
    true_rows,
)
from diffusers_tsa.features.precomputed import precomputed_settings  # noqa: E402
from diffusers_tsa.features.teacher_features import FEATURES_FORMAT_VERSION  # noqa: E402
from diffusers_tsa.training import TrainingClips  # noqa: E402
from diffusers_tsa.training.probe import PROBE_CANDIDATES  # noqa: E402


RESULTS = Path(__file__).parent / "results"
#: (rows, Arrow blocks) of the tables timed.
TABLES = ((1024, 16), (65536, 16), (1048576, 16), (1048576, 1024))
GRID = (2, 2, 2)


def base_table(folder: Path, num_rows: int) -> datasets.Dataset:
    """A small table of `num_rows` rows, saved and loaded back memory-mapped (one Arrow block)."""
    settings = json.dumps({"format": FEATURES_FORMAT_VERSION, "grid": list(GRID), "padding": "x" * 1000})
    rows = range(num_rows)
    table = datasets.Dataset.from_dict(
        {
            CAPTION: ["" if i % 16 == 0 else f"caption {i}" for i in rows],
            VIDEO: [f"clips/{i}.mp4" for i in rows],
            FEATURES_COLUMN: np.zeros((num_rows, *GRID, 4), np.float16),
            MASK_COLUMN: np.ones((num_rows, *GRID), bool),
            VALID_COLUMN: [i % 64 != 0 for i in rows],
            SETTINGS_COLUMN: [settings] * num_rows,
            FEATURES_CHECKSUM_COLUMN: [0] * num_rows,
        },
        features=datasets.Features(
            {
                CAPTION: datasets.Value("string"),
                VIDEO: datasets.Value("string"),
                FEATURES_COLUMN: datasets.Array4D((*GRID, 4), "float16"),
                MASK_COLUMN: datasets.Array3D(GRID, "bool"),
                VALID_COLUMN: datasets.Value("bool"),
                SETTINGS_COLUMN: datasets.Value("string"),
                FEATURES_CHECKSUM_COLUMN: datasets.Value("int64"),
            }
        ),
    )
    table.save_to_disk(folder)
    return datasets.load_from_disk(folder)


def ours(table: datasets.Dataset) -> dict[str, float]:
    clip = ClipSpec(max_num_frames=4, height=8, width=8)
    steps = {
        "TrainingClips": lambda: TrainingClips(table, clip, features_column=FEATURES_COLUMN, decode_videos=False),
        "settings": lambda: precomputed_settings(table, FEATURES_COLUMN),
        "probe lookup": lambda: TrainingClips(
            table.select(true_rows(table, VALID_COLUMN)[:PROBE_CANDIDATES]),
            clip,
            features_column=FEATURES_COLUMN,
            decode_videos=False,
        ),
        "precompute check": lambda: len(true_rows(table, VALID_COLUMN)),
    }
    return {name: timed(step) for name, step in steps.items()}


def reference(table: datasets.Dataset) -> dict[str, float]:
    """The same work row by row, as it was done before."""

    def training_clips():
        valid = table[VALID_COLUMN]
        kept = table.select([i for i, ok in enumerate(valid) if ok]) if len(valid) - sum(valid) else table
        return sum(1 for caption in kept[CAPTION] if not caption)

    steps = {
        "TrainingClips": training_clips,
        "settings": lambda: [value for value in table.unique(SETTINGS_COLUMN) if value is not None],
        "probe lookup": training_clips,  # a second TrainingClips over the whole table
        "precompute check": lambda: sum(all(row) for row in zip(*(table[c] for c in [VALID_COLUMN]))),
    }
    return {name: timed(step) for name, step in steps.items()}


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference_rows", type=int, default=65536, help="the largest table the reference reads")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for count, blocks in TABLES:
            base = base_table(Path(folder) / f"{count}-{blocks}", count // blocks)
            table = datasets.concatenate_datasets([base] * blocks)
            ours(table)  # warm: the first pass pages the memory-mapped file in
            row = {"rows": count, "blocks": blocks, "ours": ours(table)}
            if count <= args.reference_rows:
                row["reference"] = reference(table)
            rows.append(row)
            print(row, flush=True)
    load = {"before": load_before, "after": os.getloadavg()}
    command = "OMP_NUM_THREADS=2 python benchmarks/bench_startup.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "startup_cpu.json"
    out.write_text(json.dumps({"command": command, "load_average": load, "results": rows}, indent=2))
    steps = list(rows[0]["ours"])
    lines = [
        f"Start-up reads of a precomputed table, seconds, ours / row by row (before): `{command}`.",
        f"Load average (1, 5, 15 min) before {load['before']}, after {load['after']}.",
        "",
        "| rows | Arrow blocks | " + " | ".join(steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for row in rows:
        cells = []
        for step in steps:
            before = f"{row['reference'][step]:.2f}" if "reference" in row else "not run"
            cells.append(f"{row['ours'][step]:.3f} / {before}")
        lines.append(f"| {row['rows']} | {row['blocks']} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
