"""Benchmark prompt sets and the benchmarks' file-naming protocols.

Sources are local files (`.txt` one prompt a line, `.csv`, `.json` list of objects, `.jsonl`) or Hugging Face Hub
dataset ids (`videophysics/...`). Column names follow the published files:

- VideoPhy: `caption`, `states_of_matter` (`videophysics/videophy_test_public`, one row per generator and caption);
  upsampled captions as a line-aligned `.txt` (VideoREPA's `videophy_detailed.txt`) or an `upsampled_caption`
  column.
- VideoPhy2: `caption`, `upsampled_caption` (`videophysics/videophy2_upsampled_prompts`), `is_hard`
  (`videophysics/videophy2_test`).
- VBench: `prompt_en`, `dimension` (`VBench_full_info.json`); NOVA's dense prompts: `prompt`, `dense_prompt`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

from .common import EvalInputError, parse_bool

logger = logging.getLogger("eval.prompts")

_PROMPT_KEYS = ("caption", "prompt_en", "prompt")
_UPSAMPLED_KEYS = ("upsampled_caption", "dense_prompt")
# Longest file name most file systems accept, in bytes.
_MAX_NAME_BYTES = 255


@dataclasses.dataclass(frozen=True)
class PromptEntry:
    """A benchmark prompt: the text judged (`prompt`), the text generated from, and its labels."""

    prompt: str
    generation_prompt: str
    category: str = ""
    is_hard: bool | None = None


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A benchmark's generation protocol.

    Args:
        name (`str`): `videophy`, `videophy2` or `vbench`.
        videos_per_prompt (`int`): videos generated for each prompt (VBench: 5).
        needs_upsampled (`bool`): whether the paper's protocol generates from upsampled prompts.
        default_prompts (`str` or `None`): Hub dataset with the prompts.
        default_labels (`str` or `None`): Hub dataset with labels keyed by caption (categories, hard subset).
        upsampled_source (`str`): where the paper's upsampled prompts come from, for messages.
        paper_prompts (`int`): distinct prompts of the paper's table; another count is warned about.
    """

    name: str
    videos_per_prompt: int
    needs_upsampled: bool
    default_prompts: str | None
    default_labels: str | None
    upsampled_source: str
    paper_prompts: int

    def filename(self, prompt: str, index: int) -> str:
        """The video's file name under the benchmark's protocol."""
        return vbench_filename(prompt, index) if self.name == "vbench" else videophy_filename(prompt)


BENCHMARKS = {
    # Table 1: VideoREPA's 344 captions and their upsampled form (videophy.txt, videophy_detailed.txt).
    "videophy": Benchmark(
        "videophy", 1, True, "videophysics/videophy_test_public", None, "videophy_detailed.txt", 344
    ),
    # Table 2: VideoREPA's videophy2.csv, 590 prompts; the published prompt-upsampled-test.csv has one more.
    "videophy2": Benchmark(
        "videophy2", 1, True, "videophysics/videophy2_upsampled_prompts", "videophysics/videophy2_test",
        "the upsampled_caption column of videophy2.csv", 590,
    ),
    # Table 3: the 946 entries of VBench_full_info.json (944 prompts), generated from NOVA's dense prompts.
    "vbench": Benchmark("vbench", 5, True, None, None, "NOVA's nova_dense_prompts.json", 944),
}


def _check_name(name: str, prompt: str) -> str:
    if "/" in name or "\0" in name or len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise EvalInputError(
            f"The prompt {prompt!r} gives the file name {name!r}, which has a '/' or is longer than "
            f"{_MAX_NAME_BYTES} bytes; shorten or edit the prompt in your prompt file."
        )
    return name


def videophy_filename(caption: str) -> str:
    """VideoPhy and VideoPhy2 naming (VideoREPA's protocol): spaces to `_`, trailing period dropped, `.mp4`."""
    return _check_name("_".join(caption.rstrip(".").split(" ")) + ".mp4", caption)


def caption_from_videophy_filename(name: str) -> str:
    """Inverse of `videophy_filename` up to what the name loses: the trailing period and literal underscores."""
    if not name.endswith(".mp4"):
        raise EvalInputError(f"{name!r} is not a VideoPhy video name (`<caption with _ for spaces>.mp4`).")
    return name[: -len(".mp4")].replace("_", " ")


def vbench_filename(prompt: str, index: int) -> str:
    """VBench naming: `{prompt}-{index}.mp4` in one flat folder (VBench's `build_full_info_json`)."""
    return _check_name(f"{prompt}-{index}.mp4", prompt)


def parse_vbench_filename(name: str) -> tuple[str, int]:
    """Inverse of `vbench_filename`: `(prompt, index)`."""
    stem, dash, index = name.removesuffix(".mp4").rpartition("-")
    if not name.endswith(".mp4") or not dash or not index.isdigit():
        raise EvalInputError(f"{name!r} is not a VBench video name (`{{prompt}}-{{index}}.mp4`).")
    return stem, int(index)


def read_table(source: str, split: str | None = None) -> list[dict]:
    """Rows of a local `.csv`, `.json` or `.jsonl` file, or of a Hub dataset id (one split)."""
    path = Path(source)
    if path.exists():
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as f:
                return list(csv.DictReader(f))
        if path.suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8").splitlines()
            return [json.loads(line) for line in lines if line.strip()]
        if path.suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
                return rows
            raise EvalInputError(f"{path} must hold a JSON list of objects.")
        raise EvalInputError(f"{path}: unsupported prompt file type {path.suffix!r}; use .txt, .csv, .json or .jsonl.")
    if source.count("/") != 1 or source.startswith((".", "/")):
        raise EvalInputError(f"{source!r} is neither an existing file nor a Hub dataset id (`owner/name`).")
    return _read_hub_table(source, split)


def _read_hub_table(repo_id: str, split: str | None) -> list[dict]:
    import datasets

    loaded = datasets.load_dataset(repo_id, split=split)
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise EvalInputError(f"{repo_id} has splits {list(loaded)}: choose one with --split.")
        loaded = next(iter(loaded.values()))
    return [dict(row) for row in loaded]


def _first(row: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if key in row and row[key] is not None:
            value = row[key]
            return ";".join(value) if isinstance(value, list) else str(value)
    return None


def _read_prompt_rows(source: str, split: str | None) -> list[dict]:
    if Path(source).suffix == ".txt" and Path(source).is_file():
        lines = Path(source).read_text(encoding="utf-8").splitlines()
        return [{"caption": line.strip()} for line in lines if line.strip()]
    return read_table(source, split)


def _merge(entries: dict[str, dict], prompt: str, field: str, value, where: str) -> None:
    """Set `field` of `prompt`, refusing conflicting labels of a repeated prompt."""
    old = entries[prompt].get(field)
    if value is None or value == "" or old == value:
        return
    if old in (None, ""):
        entries[prompt][field] = value
    else:
        raise EvalInputError(f"{where}: {prompt!r} appears twice with different {field}: {old!r} and {value!r}.")


def load_prompts(
    benchmark: Benchmark,
    prompts: str | None = None,
    upsampled: str | None = None,
    labels: str | None = None,
    split: str | None = None,
    use_upsampled: bool = True,
) -> list[PromptEntry]:
    """Load a benchmark's prompts, one entry per distinct prompt in file order.

    Args:
        benchmark (`Benchmark`): the benchmark whose protocol applies.
        prompts (`str`, *optional*): file or Hub dataset with the prompts; the benchmark's default Hub dataset if
            `None`. Repeated prompts (one row per generator in VideoPhy's test set) are merged.
        upsampled (`str`, *optional*): upsampled prompts: a `.txt` file line-aligned with `prompts`, or a table
            with the prompt and `upsampled_caption` (or NOVA's `dense_prompt`).
        labels (`str`, *optional*): a table keyed by prompt with `states_of_matter` and/or `is_hard`; the
            benchmark's default Hub dataset if `None` (`"none"` to skip).
        split (`str`, *optional*): split of the Hub datasets.
        use_upsampled (`bool`, defaults to `True`): generate from upsampled prompts; `False` generates from the
            prompts themselves.

    Returns:
        `list[PromptEntry]`
    """
    source = prompts or benchmark.default_prompts
    if source is None:
        raise EvalInputError(f"{benchmark.name} needs --prompts (e.g. VBench's VBench_full_info.json).")
    entries: dict[str, dict] = {}
    for i, row in enumerate(_read_prompt_rows(source, split)):
        prompt = _first(row, _PROMPT_KEYS)
        if not prompt:
            raise EvalInputError(f"{source}, row {i + 1}: no prompt column (one of {_PROMPT_KEYS}).")
        entries.setdefault(prompt, {})
        where = f"{source}, row {i + 1}"
        _merge(entries, prompt, "upsampled", _first(row, _UPSAMPLED_KEYS), where)
        _merge(entries, prompt, "category", _first(row, ("states_of_matter",)), where)
        # VBench lists a prompt once per dimension group; a repeated prompt belongs to all its dimensions.
        dimensions = row.get("dimension") or ()
        dimensions = [dimensions] if isinstance(dimensions, str) else dimensions
        entries[prompt].setdefault("dimensions", set()).update(dimensions)
        if "is_hard" in row:
            _merge(entries, prompt, "is_hard", parse_bool(row["is_hard"], where), where)
    if upsampled:
        _attach_upsampled(entries, upsampled, split)
    labels = labels or benchmark.default_labels
    if labels and labels != "none":
        _attach_labels(entries, labels, split)
    missing = [p for p, e in entries.items() if not e.get("upsampled")]
    if use_upsampled and benchmark.needs_upsampled and missing:
        raise EvalInputError(
            f"{benchmark.name} generates from upsampled prompts, as the paper does, and {len(missing)} prompt(s) "
            f"have none (first: {missing[0]!r}). Pass --upsampled_prompts ({benchmark.upsampled_source}) or "
            "--no_upsampling to generate from the prompts themselves."
        )
    if len(entries) != benchmark.paper_prompts:
        logger.warning(
            "%s gives %d %s prompts; the paper's table has %d (%s), so its numbers are not comparable with them.",
            source, len(entries), benchmark.name, benchmark.paper_prompts, benchmark.upsampled_source,
        )
    return [
        PromptEntry(
            p,
            (e.get("upsampled") if use_upsampled else None) or p,
            e.get("category") or ";".join(sorted(e["dimensions"])),
            e.get("is_hard"),
        )
        for p, e in entries.items()
    ]


def _attach_upsampled(entries: dict[str, dict], source: str, split: str | None) -> None:
    if Path(source).suffix == ".txt":
        lines = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(lines) != len(entries):
            raise EvalInputError(
                f"{source} has {len(lines)} upsampled prompts but there are {len(entries)} prompts: a .txt must "
                "be line-aligned with the prompts (VideoPhy: videophy_detailed.txt with videophy.txt)."
            )
        for entry, line in zip(entries.values(), lines):
            entry["upsampled"] = line
        return
    first_row: dict[str, int] = {}
    for i, row in enumerate(read_table(source, split)):
        prompt, text = _first(row, _PROMPT_KEYS), _first(row, _UPSAMPLED_KEYS)
        if not text:
            raise EvalInputError(f"{source}, row {i + 1}: no upsampled prompt column (one of {_UPSAMPLED_KEYS}).")
        if prompt not in entries:
            continue
        if prompt in first_row:  # NOVA's dense VBench prompts give two prompts twice, once per dimension
            if text != entries[prompt]["upsampled"]:
                logger.warning(
                    "%s gives %r two upsampled prompts (rows %d and %d); its videos are generated from the first "
                    "(row %d), since one set of videos serves both of its VBench dimensions.",
                    source, prompt, first_row[prompt] + 1, i + 1, first_row[prompt] + 1,
                )
            continue
        first_row[prompt] = i
        entries[prompt]["upsampled"] = text


def _attach_labels(entries: dict[str, dict], source: str, split: str | None) -> None:
    for i, row in enumerate(read_table(source, split)):
        prompt = _first(row, _PROMPT_KEYS)
        if prompt not in entries:
            continue
        where = f"{source}, row {i + 1}"
        _merge(entries, prompt, "category", _first(row, ("states_of_matter",)), where)
        if "is_hard" in row:
            _merge(entries, prompt, "is_hard", parse_bool(row["is_hard"], where), where)
