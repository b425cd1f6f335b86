"""The experiment's table (mean +- standard deviation over seeds, each arm against no alignment) and figure (each
metric per arm with error bars, and a strip of frames of one held-out prompt per arm)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


#: The metrics per arm: key, label, whether lower is better.
METRICS = (
    ("top1", "held-out top-1 agreement", False),
    ("oracle_top1", "held-out top-1 agreement with the oracle", False),
    ("kl", "held-out tempered KL", True),
    ("track_error", "track error vs parabola (px)", True),
    ("gravity_error", "fitted g error (px/frame²)", True),
    ("exists", "frames with the ball, right size", False),
)


def summary(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value), NaNs left out."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def differs(arm: list[float], reference: list[float]) -> tuple[bool, float]:
    """Whether `arm` differs from `reference` beyond the spread (the means further apart than the sum of the two
    standard deviations), and Welch's t statistic (NaN when both spreads are zero)."""
    (m1, s1), (m0, s0) = summary(arm), summary(reference)
    n1, n0 = len(arm), len(reference)
    denominator = math.sqrt(s1**2 / n1 + s0**2 / n0) if n1 and n0 else 0.0
    t = (m1 - m0) / denominator if denominator > 0 else float("nan")
    return abs(m1 - m0) > s1 + s0, t


def table(results: dict) -> str:
    """The markdown table of `results` (`per_arm[arm][metric]` lists over seeds)."""
    per_arm, arms = results["per_arm"], list(results["per_arm"])
    header = "| arm | " + " | ".join(label for _, label, _ in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for arm in arms:
        cells = []
        for key, _, _ in METRICS:
            mean, std = summary(per_arm[arm][key])
            mark = ""
            if arm != "none":
                beyond, t = differs(per_arm[arm][key], per_arm["none"][key])
                mark = f" {'**≠**' if beyond else '≈'} (t={t:+.1f})" if not math.isnan(t) else " ≈"
            cells.append(f"{mean:.3f} ± {std:.3f}{mark}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for name, row in results["floors"].items():
        cells = [f"{row[key]:.3f}" if key in row else "–" for key, _, _ in METRICS]
        lines.append(f"| *{name}* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(results: dict, strips: dict[str, np.ndarray], path: Path, prompt: str) -> Path:
    """Bars of each metric per arm (mean, error bar one standard deviation over seeds, the seeds as dots, the real
    held-out clips' value as a dashed line where there is one) above a strip of frames of `prompt`, one row per arm
    (`strips`: name -> uint8 `(T, H, W, 3)`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_arm, arms = results["per_arm"], list(results["per_arm"])
    fig = plt.figure(figsize=(16, 4 + 0.75 * len(strips)), constrained_layout=True)
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 0.55 * len(strips)])
    axes = top.subplots(1, len(METRICS))
    x = np.arange(len(arms))
    for ax, (key, label, lower) in zip(axes, METRICS):
        stats = [summary(per_arm[arm][key]) for arm in arms]
        ax.bar(x, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4, color="#8fb3d9", edgecolor="#335")
        for i, arm in enumerate(arms):
            ax.scatter([i] * len(per_arm[arm][key]), per_arm[arm][key], s=10, color="#223", zorder=3)
        real = results["floors"].get("real held-out clips", {}).get(key)
        if real is not None:
            ax.axhline(real, color="#a33", linestyle="--", linewidth=1, label="real clips")
            ax.legend(fontsize=7)
        ax.set_xticks(x, arms, rotation=45, fontsize=8)
        ax.set_title(f"{label}\n({'lower' if lower else 'higher'} is better)", fontsize=9)
    rows = bottom.subplots(len(strips), 1, squeeze=False)[:, 0]
    for ax, (name, frames) in zip(rows, strips.items()):
        ax.imshow(np.concatenate(list(frames), axis=1), interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    bottom.suptitle(f"held-out prompt: {prompt!r} (seed 0, frames left to right)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
