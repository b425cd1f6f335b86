"""Helpers shared by the evaluation commands: errors, the generation manifest, tables, completeness and reports."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence


logger = logging.getLogger("eval")

MANIFEST_NAME = "manifest.csv"
VIDEOS_SUBDIR = "videos"
MANIFEST_COLUMNS = ("prompt", "generation_prompt", "file", "seed", "category", "is_hard")
#: Written after the required columns; a manifest without them (videos generated elsewhere) reads as unknown.
MANIFEST_SCHEDULER = "scheduler"
MANIFEST_VAE_TILING = "vae_tiling"
# How many missing or unexpected names an error message lists before summarising the rest.
_LISTED = 20
#: Decimals of the scores that the commands print: the paper's tables give percentages with one decimal.
DECIMALS = 1


class EvalInputError(ValueError):
    """A prompt file, manifest, video folder or argument that the evaluation cannot use as given."""


class EvaluatorOutputError(ValueError):
    """An evaluator output file that is malformed or does not match the videos that were prepared."""


class EvaluatorFailedError(RuntimeError):
    """An evaluator that exited with an error status; its own messages, printed before, say why."""


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """One video of a benchmark run, as listed in `manifest.csv`.

    Args:
        prompt (`str`): the benchmark's prompt (the short caption); it names the file and is what the video is
            judged against.
        generation_prompt (`str`): the text the model was conditioned on (an upsampled or dense prompt, or `prompt`).
        file (`str`): path of the video relative to the generation folder, e.g. `videos/A_cat_jumps.mp4`.
        seed (`int`): seed of the generator for this video.
        category (`str`): the benchmark's category (VideoPhy `states_of_matter`, VBench dimensions joined by `;`).
        is_hard (`bool` or `None`): VideoPhy2's hard-subset flag, `None` when the prompt file does not mark it.
        scheduler (`str`): the sampler the video was generated with (`""` when unknown).
        vae_tiling (`bool` or `None`): whether the VAE decoded it in tiles, `None` when unknown.
    """

    prompt: str
    generation_prompt: str
    file: str
    seed: int
    category: str = ""
    is_hard: bool | None = None
    scheduler: str = ""
    vae_tiling: bool | None = None


def _csv_bool(value: bool | None) -> str:
    return "" if value is None else str(value).lower()


def parse_bool(value: str, where: str) -> bool | None:
    """Parse a CSV truth value (`true/false/1/0/yes/no`, empty for unknown); raise naming `where` otherwise."""
    text = str(value).strip().lower()
    if text in ("", "none", "nan"):
        return None
    if text in ("1", "1.0", "true", "yes"):
        return True
    if text in ("0", "0.0", "false", "no"):
        return False
    raise EvalInputError(f"{where}: expected a truth value (true/false/1/0), got {value!r}.")


def write_manifest(records: Sequence[VideoRecord], path: Path) -> None:
    """Write `records` to `path` as CSV (atomically, so that concurrent shards never leave a torn file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*MANIFEST_COLUMNS, MANIFEST_SCHEDULER, MANIFEST_VAE_TILING])
        for r in records:
            writer.writerow(
                [
                    r.prompt,
                    r.generation_prompt,
                    r.file,
                    r.seed,
                    r.category,
                    _csv_bool(r.is_hard),
                    r.scheduler,
                    _csv_bool(r.vae_tiling),
                ]
            )
    os.replace(tmp, path)


def read_manifest(path: Path) -> list[VideoRecord]:
    """Read a `manifest.csv` written by `eval.generate`; raise naming the line of any malformed row."""
    if not path.is_file():
        raise EvalInputError(
            f"--generation_dir {path.parent} has no {path.name}: pass the --output_dir of `python -m eval.generate` "
            "(it holds manifest.csv and videos/), or write one for existing videos with `python -m eval.generate "
            "... --manifest_only`."
        )
    records = []
    for line, row in iter_csv_rows(path, header=MANIFEST_COLUMNS):
        where = f"{path}, line {line}"
        try:
            seed = int(row["seed"])
        except ValueError:
            raise EvalInputError(f"{where}: seed must be an integer, got {row['seed']!r}.") from None
        if not row["prompt"] or not row["file"]:
            raise EvalInputError(f"{where}: empty prompt or file.")
        records.append(
            VideoRecord(
                row["prompt"],
                row["generation_prompt"],
                row["file"],
                seed,
                row["category"],
                parse_bool(row["is_hard"], where),
                row.get(MANIFEST_SCHEDULER, ""),
                parse_bool(row.get(MANIFEST_VAE_TILING, ""), where),
            )
        )
    if not records:
        raise EvalInputError(f"{path} lists no videos.")
    return records


def iter_csv_rows(path: Path, header: Sequence[str] | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield `(line, row)` for each record of a CSV file with a header, `line` being where the record starts.

    Every record must have as many fields as the header; with `header` given, the file's header must contain
    those columns (others are kept). Records may span lines (quoted newlines), so lines are counted exactly. A file
    that is not UTF-8 CSV text is an `EvalInputError`.
    """
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            columns = next(reader)
            missing = [c for c in (header or ()) if c not in columns]
            if missing:
                raise EvalInputError(f"{path}, line 1: header {columns} lacks the column(s) {missing}.")
            end = reader.line_num
            for fields in reader:
                start, end = end + 1, reader.line_num
                if not fields:
                    continue
                if len(fields) != len(columns):
                    raise EvaluatorOutputError(
                        f"{path}, line {start}: expected {len(columns)} fields ({','.join(columns)}), "
                        f"got {len(fields)}: {_clip(fields)}."
                    )
                yield start, dict(zip(columns, fields))
        except StopIteration:
            raise EvalInputError(f"{path} is empty; expected a CSV header.") from None
        except (UnicodeDecodeError, csv.Error) as e:
            raise EvalInputError(f"{path}: not UTF-8 CSV text ({e}).") from None


def iter_headerless_rows(path: Path, num_fields: int) -> Iterator[tuple[int, list[str]]]:
    """Yield `(line, fields)` for each record of a header-less CSV file, each with exactly `num_fields` fields."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        end = 0
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not fields:
                continue
            if len(fields) != num_fields:
                raise EvaluatorOutputError(
                    f"{path}, line {start}: expected {num_fields} fields, got {len(fields)}: {_clip(fields)}. "
                    "Is this the right file? Rerun the evaluator into a fresh file if it was cut short."
                )
            yield start, fields


def _clip(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def listed(names: Iterable[str]) -> str:
    """A short, readable list of names for an error message: the first few, then a count of the rest."""
    names = list(names)
    head = "\n  ".join(names[:_LISTED])
    more = f"\n  ... and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return f"\n  {head}{more}"


def is_complete_video(path: Path) -> bool:
    """Whether `path` is a finished video: generation writes a temporary file and renames it when done."""
    return path.is_file() and path.stat().st_size > 0


def decodes_as_expected(path: Path, num_frames: int, height: int, width: int) -> bool:
    """Whether `path` is a complete video that decodes to `num_frames` RGB frames of `height x width`: a file that
    was overwritten or cut short, or made with other sizes, is not."""
    if not is_complete_video(path):
        return False
    import imageio.v3 as iio

    try:
        frames = iio.imread(path)
    except Exception:  # noqa: BLE001 - any decoder failure means the video is not usable
        return False
    return tuple(frames.shape) == (num_frames, height, width, 3)


def check_complete(records: Sequence[VideoRecord], generation_dir: Path) -> None:
    """Raise `EvalInputError` listing every video of `records` that is missing or empty under `generation_dir`."""
    missing = [r.file for r in records if not is_complete_video(generation_dir / r.file)]
    if missing:
        raise EvalInputError(
            f"{len(missing)} of {len(records)} videos are missing under {generation_dir}:{listed(missing)}\n"
            "Finish generation first (`python -m eval.generate` resumes where it stopped)."
        )


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV file with a header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def write_json(path: Path, obj: object) -> None:
    """Write `obj` as indented JSON, at full precision (atomically, so that a concurrent reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def rounded(obj: object, decimals: int = DECIMALS) -> object:
    """`obj` (JSON-like: dicts, lists, numbers, strings) with every float rounded to `decimals`, for printing."""
    if isinstance(obj, float):
        return round(obj, decimals)
    if isinstance(obj, dict):
        return {k: rounded(v, decimals) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v, decimals) for v in obj]
    return obj


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def percent(hits: int, total: int) -> float:
    """`hits / total` in percent; 0 of 0 is an error, not 0 %."""
    if total == 0:
        raise ValueError("a share of zero videos is undefined")
    return 100.0 * hits / total


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; numbers are written with `DECIMALS` decimals, `None` as `-`."""

    def cell(v: object) -> str:
        if v is None:
            return "-"
        return f"{v:.{DECIMALS}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_evaluator(python: str, script: Path, args: Sequence[str]) -> None:
    """Run an evaluator's own script with the user's evaluator Python, from the script's folder.

    The evaluators import their sibling modules (`mplug_owl_video`, `data_utils`, `utils`), which Python finds
    next to the script; the working directory is the script's folder as in their READMEs.
    """
    if not script.is_file():
        raise EvalInputError(
            f"Evaluator script {script} not found: --evaluator_repo must be a clone of "
            "https://github.com/Hritikbansal/videophy."
        )
    if not Path(python).exists():
        raise EvalInputError(f"--evaluator_python {python} does not exist: give the `python` of the evaluator env.")
    command = [python, str(script), *args]
    logger.info("running %s", " ".join(command))
    result = subprocess.run(command, cwd=script.parent)
    if result.returncode != 0:
        raise EvaluatorFailedError(
            f"The evaluator exited with status {result.returncode} (its messages are above): {' '.join(command)}. "
            "Check that --evaluator_python is the evaluator's environment and --checkpoint its checkpoint."
        )


def setup_logging() -> None:
    """Log INFO and above to stderr in a compact format (called by each command's `main`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def exit_on_user_error(main: Callable[[], None]) -> None:
    """Run a command's `main`; a bad input ends it with its one-line message instead of a traceback."""
    from diffusers_tsa.errors import UsageError

    try:
        main()
    except (EvalInputError, EvaluatorOutputError, EvaluatorFailedError, UsageError) as e:
        sys.exit(f"error: {e}")
