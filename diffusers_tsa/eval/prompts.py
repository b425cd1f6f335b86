"""Benchmark prompt sets and the benchmarks' file-naming protocols.

Sources are local files (`.txt` one prompt a line, `.csv`, `.json` list of objects, `.jsonl`) or Hugging Face Hub
dataset ids (`videophysics/...`). Column names follow the published files:

- VideoPhy: `caption`, `states_of_matter` (`videophysics/videophy_test_public`, one row per generator and caption);
  upsampled captions as a line-aligned `.txt` (VideoREPA's `videophy_detailed.txt`) or an `upsampled_caption`
  column.
- VideoPhy2: `caption`, `upsampled_caption` (`videophysics/videophy2_upsampled_prompts`), `is_hard`
  (`videophysics/videophy2_test`).
- VBench: `prompt_en`, `dimension` (`VBench_full_info.json`); NOVA's dense prompts: `prompt`, `dense_prompt` and
  `tag`, the VBench prompt folder of the entry (`VBENCH_FOLDERS`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

from .common import EvalInputError, parse_bool


logger = logging.getLogger("eval.prompts")

_PROMPT_KEYS = ("caption", "prompt_en", "prompt")
_UPSAMPLED_KEYS = ("upsampled_caption", "dense_prompt")
# Longest file name most file systems accept, in bytes.
_MAX_NAME_BYTES = 255
#: VBench dimension -> the folder of videos it evaluates, named after the prompt list they were sampled from
#: (VBench's `dimension_to_folder.json`, as its `evaluate.sh` reads them and NOVA's `evaluations/vbench/sample.py`
#: writes them). A prompt listed in two folders (two of VBench_full_info.json's) has videos in each.
VBENCH_FOLDERS = {
    "subject_consistency": "subject_consistency",
    "background_consistency": "scene",
    "aesthetic_quality": "overall_consistency",
    "imaging_quality": "overall_consistency",
    "object_class": "object_class",
    "multiple_objects": "multiple_objects",
    "color": "color",
    "spatial_relationship": "spatial_relationship",
    "scene": "scene",
    "temporal_style": "temporal_style",
    "overall_consistency": "overall_consistency",
    "human_action": "human_action",
    "temporal_flickering": "temporal_flickering",
    "motion_smoothness": "subject_consistency",
    "dynamic_degree": "subject_consistency",
    "appearance_style": "appearance_style",
}


@dataclasses.dataclass(frozen=True)
class PromptEntry:
    """A benchmark prompt: the text judged (`prompt`), the text generated from, its labels, for VBench the folder
    of its videos (`VBENCH_FOLDERS`; `""` for the other benchmarks' single folder), and the first frame an
    image-to-video run animates, from the prompt file's `image` column (a path, relative to a local prompt file's
    folder, or a URL; `""` without one)."""

    prompt: str
    generation_prompt: str
    category: str = ""
    is_hard: bool | None = None
    folder: str = ""
    image: str = ""


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
        evaluator_names (`bool`): whether the evaluator finds the videos by their protocol names (VBench's
            `{prompt}-{i}.mp4`), so that two videos sharing a name must be refused rather than renamed.
    """

    name: str
    videos_per_prompt: int
    needs_upsampled: bool
    default_prompts: str | None
    default_labels: str | None
    upsampled_source: str
    paper_prompts: int
    evaluator_names: bool

    def filename(self, prompt: str, index: int) -> str:
        """The video's file name under the benchmark's protocol."""
        return vbench_filename(prompt, index) if self.name == "vbench" else videophy_filename(prompt)


BENCHMARKS = {
    # Table 1: VideoREPA's 344 captions and their upsampled form (videophy.txt, videophy_detailed.txt).
    "videophy": Benchmark(
        "videophy", 1, True, "videophysics/videophy_test_public", None, "videophy_detailed.txt", 344, False
    ),
    # Table 2: VideoREPA's videophy2.csv, 590 prompts; the published prompt-upsampled-test.csv has one more.
    "videophy2": Benchmark(
        "videophy2",
        1,
        True,
        "videophysics/videophy2_upsampled_prompts",
        "videophysics/videophy2_test",
        "the upsampled_caption column of videophy2.csv",
        590,
        False,
    ),
    # Table 3: the 946 entries of VBench_full_info.json (944 prompts), generated from NOVA's dense prompts.
    "vbench": Benchmark("vbench", 5, True, None, None, "NOVA's nova_dense_prompts.json", 944, True),
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
    """VBench naming: `{prompt}-{index}.mp4` within a folder (VBench's `build_full_info_json`)."""
    return _check_name(f"{prompt}-{index}.mp4", prompt)


def vbench_folders(dimensions: Sequence[str], where: str) -> set[str]:
    """The folders (`VBENCH_FOLDERS`) whose videos VBench evaluates `dimensions` on; errors name `where`."""
    unknown = sorted(set(dimensions) - set(VBENCH_FOLDERS))
    if unknown:
        raise EvalInputError(f"{where}: {unknown} are not VBench dimensions; VBench's are {sorted(VBENCH_FOLDERS)}.")
    return {VBENCH_FOLDERS[d] for d in dimensions}


def parse_vbench_filename(name: str) -> tuple[str, int]:
    """Inverse of `vbench_filename`: `(prompt, index)`."""
    stem, dash, index = name.removesuffix(".mp4").rpartition("-")
    if not name.endswith(".mp4") or not dash or not index.isdigit():
        raise EvalInputError(f"{name!r} is not a VBench video name (`{{prompt}}-{{index}}.mp4`).")
    return stem, int(index)


def video_filenames(
    benchmark: Benchmark,
    prompts: Sequence[str],
    per_prompt: int,
    protocol_only: bool = False,
    folders: Sequence[str] | None = None,
) -> list[list[str]]:
    """The file name of every video, `names[p][i]` for video `i` of `prompts[p]`, unique within the run.

    Videos are named by the benchmark's protocol (`Benchmark.filename`), under `folders[p]` when it is given and not
    empty (VBench's folder of the prompt, `PromptEntry.folder`). Where that gives several videos one name
    (VideoPhy's naming drops the trailing period and has no index, so `"a ball falls."` and `"a ball falls"` collide,
    as do the videos of one prompt), each of them is named `{protocol stem}-{hash}.mp4` instead, the hash being the
    first 8 hex digits of SHA-1 over the prompt and the index: the same names whatever the order of the prompts, and
    distinct but for a 1 in 2**32 chance per pair.

    Args:
        benchmark (`Benchmark`): the benchmark whose protocol names the videos.
        prompts (`Sequence[str]`): the distinct prompts, in file order.
        per_prompt (`int`): videos per prompt.
        protocol_only (`bool`, defaults to `False`): refuse colliding names instead of renaming them, as for
            videos generated elsewhere under the protocol's names; the benchmarks whose evaluator finds videos by
            name (`Benchmark.evaluator_names`) always refuse.
        folders (`Sequence[str]`, *optional*): the folder of each prompt's videos (`""`: none).

    Returns:
        `list[list[str]]`: `len(prompts)` lists of `per_prompt` names (paths `folder/name` where there is a folder).
    """
    folders = folders or [""] * len(prompts)
    names = [
        [f"{folder}/{benchmark.filename(p, i)}" if folder else benchmark.filename(p, i) for i in range(per_prompt)]
        for p, folder in zip(prompts, folders)
    ]
    collisions = _collisions(prompts, names)
    if not collisions:
        return names
    if protocol_only or benchmark.evaluator_names:
        name, owners = collisions[0]
        why = (
            "its evaluator finds the videos by these names"
            if benchmark.evaluator_names
            else ("--manifest_only lists videos generated elsewhere under these names")
        )
        raise EvalInputError(
            f"--prompts: {len(collisions)} file name(s) would be shared by several videos under {benchmark.name}'s "
            f"naming, which must be kept since {why}; first: {name!r} from {', '.join(map(repr, owners))}. "
            "Remove or reword all but one of such prompts in the prompt file."
        )
    logger.warning(
        "%d file names would be shared by several videos under %s's naming; those videos are named "
        "`<name>-<hash of prompt and index>.mp4` instead:%s",
        len(collisions),
        benchmark.name,
        "".join(f"\n  {name}: {', '.join(map(repr, owners))}" for name, owners in collisions),
    )
    shared = {name for name, _ in collisions}
    return [
        [_hashed_name(name, p, i) if name in shared else name for i, name in enumerate(row)]
        for p, row in zip(prompts, names)
    ]


def _collisions(prompts: Sequence[str], names: Sequence[Sequence[str]]) -> list[tuple[str, list[str]]]:
    """`(name, the distinct prompts of its videos)` for each name given to more than one video."""
    owners: dict[str, list[str]] = {}
    for prompt, row in zip(prompts, names):
        for name in row:
            owners.setdefault(name, []).append(prompt)
    return [(name, list(dict.fromkeys(who))) for name, who in owners.items() if len(who) > 1]


def _hashed_name(name: str, prompt: str, index: int) -> str:
    digest = hashlib.sha1(f"{prompt}\0{index}".encode("utf-8")).hexdigest()[:8]
    return _check_name(f"{name.removesuffix('.mp4')}-{digest}.mp4", prompt)


def read_table(source: str, split: str | None = None, flag: str = "--prompts") -> list[dict]:
    """Rows of a local `.csv`, `.json` or `.jsonl` file, or of a Hub dataset id (one split); errors name `flag`."""
    path = Path(source)
    if path.exists():
        try:
            return _read_local_table(path, flag)
        except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
            raise EvalInputError(f"{flag} {source}: not a readable UTF-8 {path.suffix} file ({e}).") from None
    from diffusers_tsa.paths import looks_like_local_path

    if source.count("/") != 1 or looks_like_local_path(source):
        raise EvalInputError(
            f"{flag} {source!r} is neither an existing file nor a Hub dataset id (`owner/name`); give a .txt, "
            ".csv, .json or .jsonl file or a Hub dataset."
        )
    return _read_hub_table(source, split, flag)


def _read_local_table(path: Path, flag: str) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
        if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
            return rows
        raise EvalInputError(f"{flag} {path} must hold a JSON list of objects.")
    raise EvalInputError(f"{flag} {path}: unsupported file type {path.suffix!r}; use .txt, .csv, .json or .jsonl.")


def _read_lines(source: str, flag: str) -> list[str]:
    """The non-blank lines of a `.txt` file, stripped."""
    path = Path(source)
    if not path.is_file():
        raise EvalInputError(f"{flag} {source!r}: no such file; give an existing .txt file, one prompt a line.")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise EvalInputError(f"{flag} {source}: not UTF-8 text ({e}); save it as UTF-8.") from None


def _read_hub_table(repo_id: str, split: str | None, flag: str) -> list[dict]:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    from diffusers_tsa.paths import hub_unreachable

    try:
        loaded = datasets.load_dataset(repo_id, split=split)
    except Exception as err:
        if not (hub_unreachable(err) or isinstance(err, DatasetNotFoundError)):
            raise
        why = "the Hub cannot be reached, nor is it in the cache" if hub_unreachable(err) else "no such Hub dataset"
        raise EvalInputError(
            f"{flag} {repo_id}: {why}; give a local .csv, .json or .jsonl file"
            + (" (or --labels none to skip the labels)." if flag == "--labels" else ".")
        ) from None
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
        return [{"caption": line} for line in _read_lines(source, "--prompts")]
    return read_table(source, split, "--prompts")


# Entries are keyed by (prompt, VBench folder): a prompt listed in two VBench folders is two entries.
_Key = tuple[str, str]


def _merge(entries: dict[_Key, dict], key: _Key, field: str, value, where: str) -> None:
    """Set `field` of the entry `key`, refusing conflicting labels of a repeated prompt."""
    old = entries[key].get(field)
    if value is None or value == "" or old == value:
        return
    if old in (None, ""):
        entries[key][field] = value
    else:
        raise EvalInputError(f"{where}: {key[0]!r} appears twice with different {field}: {old!r} and {value!r}.")


def _keys_of(entries: dict[_Key, dict], prompt: str | None, folder: str | None = None) -> list[_Key]:
    """The entries of `prompt`: the one in `folder` when given (NOVA's `tag`), else all of them."""
    if folder is not None and (prompt, folder) in entries:
        return [(prompt, folder)]
    return [key for key in entries if key[0] == prompt]


def load_prompts(
    benchmark: Benchmark,
    prompts: str | None = None,
    upsampled: str | None = None,
    labels: str | None = None,
    split: str | None = None,
    use_upsampled: bool = True,
) -> list[PromptEntry]:
    """Load a benchmark's prompts, one entry per distinct prompt in file order; for VBench, one per prompt and
    folder of videos (`VBENCH_FOLDERS`), as VBench evaluates them and NOVA generates them.

    Args:
        benchmark (`Benchmark`): the benchmark whose protocol applies.
        prompts (`str`, *optional*): file or Hub dataset with the prompts; the benchmark's default Hub dataset if
            `None`. Repeated prompts (one row per generator in VideoPhy's test set) are merged.
        upsampled (`str`, *optional*): upsampled prompts: a `.txt` file line-aligned with `prompts`, or a table
            with the prompt and `upsampled_caption` (or NOVA's `dense_prompt`, matched to VBench's entries by
            prompt and `tag`, so a prompt in two VBench folders gets each folder's dense prompt).
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
        raise EvalInputError(
            f"{benchmark.name} needs --prompts (e.g. VBench's VBench_full_info.json, which `python -m "
            "eval.prompt_files` fetches)."
        )
    entries: dict[_Key, dict] = {}
    for i, row in enumerate(_read_prompt_rows(source, split)):
        prompt = _first(row, _PROMPT_KEYS)
        where = f"--prompts {source}, row {i + 1}"
        if not prompt:
            raise EvalInputError(f"{where}: no prompt column (one of {_PROMPT_KEYS}).")
        # VBench lists a prompt once per prompt folder; its videos for each folder's dimensions lie in that folder.
        dimensions = row.get("dimension") or ()
        dimensions = [dimensions] if isinstance(dimensions, str) else dimensions
        for folder in sorted(vbench_folders(dimensions, where)) if dimensions else [""]:
            key = (prompt, folder)
            entries.setdefault(key, {})
            _merge(entries, key, "upsampled", _first(row, _UPSAMPLED_KEYS), where)
            _merge(entries, key, "category", _first(row, ("states_of_matter",)), where)
            _merge(entries, key, "image", _image_of(row, source), where)
            entries[key].setdefault("dimensions", set()).update(d for d in dimensions if VBENCH_FOLDERS[d] == folder)
            if "is_hard" in row:
                _merge(entries, key, "is_hard", parse_bool(row["is_hard"], where), where)
    if upsampled:
        _attach_upsampled(entries, upsampled, split)
    labels = labels or benchmark.default_labels
    if labels and labels != "none":
        _attach_labels(entries, labels, split)
    missing = [p for (p, _), e in entries.items() if not e.get("upsampled")]
    if use_upsampled and benchmark.needs_upsampled and missing:
        raise EvalInputError(
            f"{benchmark.name} generates from upsampled prompts, as the paper does, and {len(missing)} prompt(s) "
            f"have none (first: {missing[0]!r}). Pass --upsampled_prompts ({benchmark.upsampled_source}) or "
            "--no_upsampling to generate from the prompts themselves."
        )
    distinct = len({p for p, _ in entries})
    if distinct != benchmark.paper_prompts:
        logger.warning(
            "%s gives %d %s prompts; the paper's table has %d (%s), so its numbers are not comparable with them.",
            source,
            distinct,
            benchmark.name,
            benchmark.paper_prompts,
            benchmark.upsampled_source,
        )
    return [
        PromptEntry(
            p,
            (e.get("upsampled") if use_upsampled else None) or p,
            e.get("category") or ";".join(sorted(e["dimensions"])),
            e.get("is_hard"),
            folder,
            e.get("image") or "",
        )
        for (p, folder), e in entries.items()
    ]


def _image_of(row: dict, source: str) -> str | None:
    """The row's `image` (a first frame): a URL as given, a relative path from a local prompt file's folder."""
    image = row.get("image")
    if not image or "://" in str(image):
        return image or None
    folder = Path(source).parent if Path(source).is_file() else Path()
    return str(folder / str(image))


def _attach_upsampled(entries: dict[_Key, dict], source: str, split: str | None) -> None:
    if Path(source).suffix == ".txt":
        lines = _read_lines(source, "--upsampled_prompts")
        if len(lines) != len(entries):
            raise EvalInputError(
                f"--upsampled_prompts {source} has {len(lines)} upsampled prompts but there are {len(entries)} "
                "prompts: a .txt must be line-aligned with the prompts (VideoPhy: videophy_detailed.txt with "
                "videophy.txt)."
            )
        for entry, line in zip(entries.values(), lines):
            entry["upsampled"] = line
        return
    first_row: dict[_Key, int] = {}
    for i, row in enumerate(read_table(source, split, "--upsampled_prompts")):
        prompt, text = _first(row, _PROMPT_KEYS), _first(row, _UPSAMPLED_KEYS)
        if not text:
            raise EvalInputError(
                f"--upsampled_prompts {source}, row {i + 1}: no upsampled prompt column (one of {_UPSAMPLED_KEYS})."
            )
        tag = row.get("tag")  # NOVA's dense VBench prompts: the VBench folder (or a dimension) of the entry
        for key in _keys_of(entries, prompt, VBENCH_FOLDERS.get(tag, tag)):
            if key not in first_row:
                first_row[key] = i
                entries[key]["upsampled"] = text
            elif text != entries[key]["upsampled"]:
                logger.warning(
                    "%s gives %r two upsampled prompts (rows %d and %d) for the same videos; they are generated "
                    "from the first (row %d).",
                    source,
                    prompt,
                    first_row[key] + 1,
                    i + 1,
                    first_row[key] + 1,
                )


def _attach_labels(entries: dict[_Key, dict], source: str, split: str | None) -> None:
    for i, row in enumerate(read_table(source, split, "--labels")):
        where = f"--labels {source}, row {i + 1}"
        for key in _keys_of(entries, _first(row, _PROMPT_KEYS)):
            _merge(entries, key, "category", _first(row, ("states_of_matter",)), where)
            if "is_hard" in row:
                _merge(entries, key, "is_hard", parse_bool(row["is_hard"], where), where)
