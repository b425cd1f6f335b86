"""Several runs side by side in the layout of the paper's Tables 1-3, as Markdown and CSV.

    python -m eval.report \\
        --run "CogVideoX-2B*" runs/base/videophy/eval/scores.json runs/base/videophy2/eval/scores.json \\
              runs/base/vbench/eval/scores.json \\
        --run "+ M-TSA" runs/mtsa/videophy/eval/scores.json runs/mtsa/videophy2/eval/scores.json \\
              runs/mtsa/vbench/eval/scores.json \\
        --output_dir tables

Each JSON is the output of `eval.videophy score`, `eval.videophy2 score` or `eval.vbench run|aggregate`; its
`benchmark` key says which table it fills. Markdown goes to stdout; with `--output_dir`, each table is also written
as `.md` and `.csv`. Numbers are percentages; `-` marks a value a run does not have.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping, Sequence

from .common import EvalInputError, exit_on_user_error, markdown_table, write_csv


Runs = Sequence[tuple[str, Mapping]]

_VIDEOPHY_GROUPS = (
    ("overall", "Overall"),
    ("solid_solid", "Solid-Solid"),
    ("solid_fluid", "Solid-Fluid"),
    ("fluid_fluid", "Fluid-Fluid"),
)
# Table 3 of the paper: (a) total and video quality, (b) video-condition consistency; raw dimension scores.
_VBENCH_A = (
    ("subject_consistency", "Subject Consist."),
    ("background_consistency", "Background Consist."),
    ("temporal_flickering", "Temporal Flickering"),
    ("motion_smoothness", "Motion Smoothness"),
    ("dynamic_degree", "Dynamic Degree"),
    ("aesthetic_quality", "Aesthetic Quality"),
    ("imaging_quality", "Imaging Quality"),
    ("object_class", "Object Class"),
)
_VBENCH_B = (
    ("multiple_objects", "Multiple Objects"),
    ("human_action", "Human Action"),
    ("color", "Color"),
    ("spatial_relationship", "Spatial Relationship"),
    ("scene", "Scene"),
    ("appearance_style", "Appearance Style"),
    ("temporal_style", "Temporal Style"),
    ("overall_consistency", "Overall Consistency"),
)


def _get(mapping: Mapping, *keys: str):
    for key in keys:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def table_videophy(runs: Runs) -> tuple[list[str], list[list]]:
    """Table 1: SA and PC overall and per states of matter."""
    columns = ["Method"] + [f"{title} {m}" for _, title in _VIDEOPHY_GROUPS for m in ("SA", "PC")]
    rows = [
        [label] + [_get(r, "subsets", g, m) for g, _ in _VIDEOPHY_GROUPS for m in ("sa", "pc")] for label, r in runs
    ]
    return columns, rows


def table_videophy2(runs: Runs) -> tuple[list[str], list[list]]:
    """Table 2: Joint, SA and PC; the hard subset's too when any run has it."""
    subsets = [("all", "")] + ([("hard", "Hard ")] if any(_get(r, "subsets", "hard") for _, r in runs) else [])
    columns = ["Method"] + [f"{prefix}{m}" for _, prefix in subsets for m in ("Joint", "SA", "PC")]
    rows = [
        [label] + [_get(r, "subsets", s, m) for s, _ in subsets for m in ("joint", "sa", "pc")] for label, r in runs
    ]
    return columns, rows


def table_vbench(runs: Runs) -> list[tuple[list[str], list[list]]]:
    """Table 3 (a) and (b): aggregate scores then raw dimension scores, in percent."""
    tables = []
    for score, title, dims in (("total", "Total Score", _VBENCH_A), ("semantic", "Semantic Score", _VBENCH_B)):
        head = [("quality", "Quality Score")] if score == "total" else []
        columns = ["Method", title] + [t for _, t in head] + [t for _, t in dims]
        rows = [
            [label, _get(r, score)] + [_get(r, k) for k, _ in head] + [_get(r, "dimensions", d) for d, _ in dims]
            for label, r in runs
        ]
        tables.append((columns, rows))
    return tables


def _tables(benchmark: str, runs: Runs) -> list[tuple[list[str], list[list]]]:
    if benchmark == "videophy":
        return [table_videophy(runs)]
    if benchmark == "videophy2":
        return [table_videophy2(runs)]
    return table_vbench(runs)


def render(benchmark: str, runs: Runs) -> str:
    """The benchmark's table(s) for `runs` (`[(label, scores JSON)]`) as Markdown."""
    return "\n\n".join(markdown_table(columns, rows) for columns, rows in _tables(benchmark, runs))


def render_videophy(runs: Runs) -> str:
    """Table 1 as Markdown."""
    return render("videophy", runs)


def render_videophy2(runs: Runs) -> str:
    """Table 2 as Markdown."""
    return render("videophy2", runs)


_FILES = {"videophy": "table1_videophy", "videophy2": "table2_videophy2", "vbench": "table3_vbench"}


def _read_scores(label: str, path: Path) -> object:
    """The parsed JSON of a `--run` file, or an `EvalInputError` naming the run and what to give."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problem = "no such file"
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"not JSON ({e})"
    raise EvalInputError(
        f"--run {label!r}: {path}: {problem}; give the scores.json that `eval.videophy score` or "
        "`eval.videophy2 score` writes (EVAL_DIR/scores.json, or its --output_json), that `eval.vbench run` "
        "writes (OUTPUT_DIR/scores.json), or that `eval.vbench aggregate --output_json` writes."
    )


def build_report(runs: Sequence[tuple[str, Sequence[Path]]], output_dir: Path | None = None) -> str:
    """Markdown of every table that some run has a result for; with `output_dir`, `.md` and `.csv` files too."""
    by_benchmark: dict[str, list[tuple[str, Mapping]]] = {b: [] for b in _FILES}
    for label, paths in runs:
        seen = set()
        for path in paths:
            result = _read_scores(label, Path(path))
            benchmark = result.get("benchmark") if isinstance(result, dict) else None
            if benchmark not in _FILES:
                raise EvalInputError(
                    f"--run {label!r}: {path} is not a scores JSON of eval.videophy, eval.videophy2 or eval.vbench."
                )
            if benchmark in seen:
                raise EvalInputError(f"--run {label!r} has two {benchmark} results; give one per benchmark.")
            seen.add(benchmark)
            by_benchmark[benchmark].append((label, result))
    sections = []
    for benchmark, results in by_benchmark.items():
        if not results:
            continue
        # A run without this benchmark keeps its row, with '-' everywhere, so the tables line up.
        have = dict(results)
        full = [(label, have.get(label, {})) for label, _ in runs]
        markdown = render(benchmark, full)
        sections.append(f"### {_FILES[benchmark]}\n\n{markdown}")
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / f"{_FILES[benchmark]}.md").write_text(markdown + "\n", encoding="utf-8")
            for i, (columns, rows) in enumerate(_tables(benchmark, full)):
                name = _FILES[benchmark] if benchmark != "vbench" else f"table3{'ab'[i]}_vbench"
                write_csv(output_dir / f"{name}.csv", columns, [["" if v is None else v for v in row] for row in rows])
    if not sections:
        raise EvalInputError("No results given: pass --run LABEL SCORES_JSON [...].")
    return "\n\n".join(sections)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--run",
        nargs="+",
        action="append",
        required=True,
        metavar=("LABEL", "SCORES_JSON"),
        help="A row: its label, then the scores JSON files of its benchmarks. Repeat per run.",
    )
    parser.add_argument("--output_dir", type=Path, default=None, help="Also write each table as .md and .csv.")
    args = parser.parse_args(argv)
    runs = []
    for item in args.run:
        if len(item) < 2:
            parser.error(f"--run {item}: give a label and at least one scores JSON.")
        runs.append((item[0], [Path(p) for p in item[1:]]))
    labels = [label for label, _ in runs]
    if len(set(labels)) != len(labels):
        parser.error(f"--run labels must be distinct, got {labels}.")
    print(build_report(runs, args.output_dir))


if __name__ == "__main__":
    exit_on_user_error(main)
