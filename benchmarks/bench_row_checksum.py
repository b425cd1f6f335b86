"""What checking each precomputed row's checksum costs when training reads it (`TrainingClips`): a saved table of
CogVideoX-2B-sized rows (latent moments (32, 13, 60, 90), T5 embeddings (226, 4096), VideoMAEv2 ViT-B features
(24, 10, 15, 768) and their mask, float16: 11.3 MiB a row), each row read as training reads it, and the CRC-32 of its
values timed alone. Results go to `benchmarks/results/row_checksum_cpu.json` and a Markdown table beside it.

    python benchmarks/bench_row_checksum.py
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers_tsa.data import ClipSpec  # noqa: E402
from diffusers_tsa.features.precomputed import typed_precomputed_table  # noqa: E402
from diffusers_tsa.features.transform import row_checksum, stored_value  # noqa: E402
from diffusers_tsa.training import TrainingClips  # noqa: E402


RESULTS = Path(__file__).parent / "results"
ROWS = 8
SHAPES = {"latent_moments": (32, 13, 60, 90), "prompt_embeds": (226, 4096)}
GRID, WIDTH = (24, 10, 15), 768
#: A full-size CogVideoX-2B LoRA step at 49 x 480 x 720, batch 1 (3.60e14 FLOPs, `step_cuda.md`), on an H100 at
#: 40 % of its 989 dense bf16 TFLOP/s.
STEP_SECONDS = 3.60e14 / (0.4 * 989e12)


def table(folder: Path) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    rows = {
        name: [rng.standard_normal(shape).astype(np.float16) for _ in range(ROWS)] for name, shape in SHAPES.items()
    }
    rows["teacher_features"] = [rng.standard_normal((*GRID, WIDTH)).astype(np.float16) for _ in range(ROWS)]
    rows["motion_mask"] = [rng.random(GRID) < 0.2 for _ in range(ROWS)]
    settings = {"format": 3, "grid": list(GRID), "hidden_size": WIDTH, "storage_dtype": "float16"}
    columns = {
        "caption": ["a clip"] * ROWS,
        "video": ["clip.mp4"] * ROWS,
        **rows,
        "teacher_valid": [True] * ROWS,
        "teacher_settings": [json.dumps(settings)] * ROWS,
        "teacher_checksum": [row_checksum([f, m]) for f, m in zip(rows["teacher_features"], rows["motion_mask"])],
        "inputs_checksum": [row_checksum([rows[n][i] for n in sorted(SHAPES)]) for i in range(ROWS)],
    }
    features = datasets.Features(
        {
            "caption": datasets.Value("string"),
            "video": datasets.Value("string"),
            "latent_moments": datasets.Array4D(SHAPES["latent_moments"], "float16"),
            "prompt_embeds": datasets.Array2D(SHAPES["prompt_embeds"], "float16"),
            "teacher_features": datasets.Array4D((*GRID, WIDTH), "float16"),
            "motion_mask": datasets.Array3D(GRID, "bool"),
            "teacher_valid": datasets.Value("bool"),
            "teacher_settings": datasets.Value("string"),
            "teacher_checksum": datasets.Value("int64"),
            "inputs_checksum": datasets.Value("int64"),
        }
    )
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(folder)
    return typed_precomputed_table(datasets.load_from_disk(folder), "teacher_features")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clips = TrainingClips(
            table(Path(tmp) / "table"),
            ClipSpec(height=480, width=720, max_num_frames=49),
            features_column="teacher_features",
            inputs_columns=sorted(SHAPES),
            decode_videos=False,
        )
        names = ["latent_moments", "prompt_embeds", "teacher_features", "motion_mask"]
        read, crc = [], []
        for repeat in range(3):
            for row in range(ROWS):
                start = time.perf_counter()
                clips[row]
                read.append(time.perf_counter() - start)
                values = {name: stored_value(clips.arrays[row], name) for name in names}
                start = time.perf_counter()
                row_checksum([values["teacher_features"], values["motion_mask"]])
                row_checksum([values[name] for name in sorted(SHAPES)])
                crc.append(time.perf_counter() - start)
    row_bytes = sum(2 * np.prod(s) for s in SHAPES.values()) + np.prod(GRID) * (2 * WIDTH + 1)
    result = {
        "row_mib": row_bytes / 2**20,
        "read_row_ms": 1e3 * statistics.median(read),
        "checksum_ms": 1e3 * statistics.median(crc),
        "checksum_share_of_read": statistics.median(crc) / statistics.median(read),
        "checksum_share_of_step": statistics.median(crc) / STEP_SECONDS,
        "threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "row_checksum_cpu.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "row_checksum_cpu.md").write_text(
        f"Reading one precomputed CogVideoX-2B row ({result['row_mib']:.1f} MiB: moments, T5 embeddings, VideoMAEv2 "
        "features and mask, float16) as `TrainingClips` reads it, its checksums verified, on the CPU "
        f"(median of {len(read)} reads):\n\n"
        "| read row, checksums verified (ms) | CRC-32 of the row alone (ms) | share of the read | share of a step |\n"
        "|---|---|---|---|\n"
        f"| {result['read_row_ms']:.1f} | {result['checksum_ms']:.1f} | {100 * result['checksum_share_of_read']:.1f} % "
        f"| {100 * result['checksum_share_of_step']:.2f} % |\n\n"
        f"A step: a full-size CogVideoX-2B LoRA step at 49 x 480 x 720, batch 1 ({STEP_SECONDS:.2f} s on an H100 at "
        "40 % of its bf16 peak). Rows are read in the data loader's workers, ahead of the step, so the checksum "
        "adds nothing to a step unless the workers are already the bottleneck.\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
