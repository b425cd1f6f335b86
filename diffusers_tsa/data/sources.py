"""Caption/video tables from the three places diffusers' video examples read them from."""

from __future__ import annotations

import codecs
import logging
import os
from pathlib import Path

import datasets
import pyarrow as pa

from ..errors import DatasetError, VideoDecodeError
from ..paths import check_local_path, refuse_unreachable_hub
from .columns import CAPTION, FEATURES_COLUMN, LATENTS_COLUMN, VIDEO
from .video import ClipSpec, read_video


logger = logging.getLogger(__name__)
_METADATA_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json"}


def _read_lines(path: Path, argument: str) -> list[str]:
    if not path.is_file():
        raise DatasetError(
            f"`{argument}={path.name!r}` names a file under `instance_data_root`, but {path} does not exist."
        )
    return [line.strip() for line in _read_text(path, argument).splitlines() if line.strip()]


def _read_text(path: Path, argument: str) -> str:
    """The UTF-8 text of `path` (without the byte-order mark spreadsheet programs write), or a `DatasetError` naming
    the file and the line that is not UTF-8."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}, line {line}, is not UTF-8 text ({err.reason} at byte {err.start}); re-save the file as UTF-8 "
            f"(e.g. `iconv -f latin1 -t utf-8`) for `{argument}`."
        ) from None


def _from_text_files(root: Path, caption_column: str, video_column: str) -> datasets.Dataset:
    captions = _read_lines(root / caption_column, "caption_column")
    videos = _read_lines(root / video_column, "video_column")
    if len(captions) != len(videos):
        raise DatasetError(
            f"{root / caption_column} has {len(captions)} captions but {root / video_column} has {len(videos)} "
            "video paths; the two files need one line per clip, in the same order."
        )
    return datasets.Dataset.from_dict({CAPTION: captions, VIDEO: videos})


def _load_table(
    dataset_name: str, dataset_config_name: str | None, split: str, cache_dir: str | None, revision: str | None
) -> datasets.Dataset:
    suffix = Path(dataset_name).suffix.lower()
    if os.path.isfile(dataset_name) and suffix in _METADATA_BUILDERS:
        _read_text(Path(dataset_name), "dataset_name")  # an encoding error names the line, not a pandas internal
        return datasets.load_dataset(
            _METADATA_BUILDERS[suffix], data_files=dataset_name, split="train", cache_dir=cache_dir
        )
    if os.path.isdir(dataset_name) and any(
        (Path(dataset_name) / marker).is_file() for marker in ("state.json", "dataset_dict.json")
    ):
        try:
            loaded = datasets.load_from_disk(dataset_name)
        except (OSError, pa.ArrowException) as err:  # a data file missing, truncated or not Arrow
            raise DatasetError(
                f"`dataset_name={dataset_name!r}` cannot be read: {damaged_file(Path(dataset_name), err)}; "
                "precompute it again with `python -m diffusers_tsa.features` (or save it again)."
            ) from None
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    try:
        return datasets.load_dataset(
            dataset_name, dataset_config_name, split=split, cache_dir=cache_dir, revision=revision
        )
    except Exception as err:
        refuse_unreachable_hub(err, dataset_name, "dataset_name")
        raise


def damaged_file(folder: Path, err: BaseException) -> str:
    """Which data file of the `save_to_disk` folder `folder` failed to load with `err`, and how."""
    if isinstance(err, FileNotFoundError) and err.filename:
        return f"its data file {err.filename} is missing"
    for path in sorted(folder.glob("*.arrow")):
        try:
            with pa.memory_map(str(path)) as source:
                pa.ipc.open_stream(source).read_all()
        except (OSError, pa.ArrowException) as bad:
            return f"its data file {path} is damaged or cut short ({bad})"
    return f"one of its files is damaged ({err})"


def _find_column(table: datasets.Dataset, argument: str, column: str, standard: str) -> str:
    if column in table.column_names:
        return column
    if {FEATURES_COLUMN, LATENTS_COLUMN} & set(table.column_names) and standard in table.column_names:
        # Saved by `python -m diffusers_tsa.features`, whose output has the standard names: the flag that named the
        # column for the precompute names the same column here.
        logger.info("`%s=%r`: the precomputed dataset's column is %r.", argument, column, standard)
        return standard
    raise DatasetError(f"`{argument}={column!r}`, but the dataset has columns {table.column_names}.")


def _standardise_columns(table: datasets.Dataset, caption_column: str, video_column: str) -> datasets.Dataset:
    caption_column = _find_column(table, "caption_column", caption_column, CAPTION)
    video_column = _find_column(table, "video_column", video_column, VIDEO)
    renames = {caption_column: CAPTION, video_column: VIDEO}
    clashes = [c for c in (CAPTION, VIDEO) if c in table.column_names and c not in renames]
    table = table.remove_columns(clashes).rename_columns({k: v for k, v in renames.items() if k != v})
    if isinstance(table.features[VIDEO], datasets.Video):
        # Raw bytes/path, decoded later by decord: no torchcodec decoding, no clip decoded twice.
        table = table.cast_column(VIDEO, datasets.Video(decode=False))
    return table


def _resolve_paths(table: datasets.Dataset, root: Path) -> datasets.Dataset:
    feature = table.features[VIDEO]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        return table
    return table.map(
        lambda batch: {VIDEO: [str(root / path) for path in batch[VIDEO]]},
        batched=True,
        desc="Resolving video paths",
    )


def load_video_dataset(
    dataset_name: str | None = None,
    *,
    instance_data_root: str | os.PathLike | None = None,
    caption_column: str = "text",
    video_column: str = "video",
    dataset_config_name: str | None = None,
    split: str = "train",
    cache_dir: str | None = None,
    revision: str | None = None,
) -> datasets.Dataset:
    """Loads a caption/video table with the flags of diffusers' CogVideoX training examples.

    Three sources are read:

    - `instance_data_root` alone: a folder with two text files named by `caption_column` and `video_column`
      (e.g. `prompts.txt`, `videos.txt`), one caption and one video path (relative to the folder) per line;
    - `dataset_name` ending in `.csv`, `.json` or `.jsonl`: a metadata table whose video paths are relative to
      `instance_data_root` if given, else to the table's folder;
    - any other `dataset_name`: a folder written by `save_to_disk`, or a dataset on the Hub or on disk for
      `datasets.load_dataset`; its video column holds paths (relative to `instance_data_root` when given) or a
      `datasets.Video` feature, which is kept as undecoded `{"path", "bytes"}` values.

    Args:
        dataset_name (`str`, *optional*): metadata file, saved dataset folder, or dataset name.
        instance_data_root (`str` or `os.PathLike`, *optional*): folder of the clips (and of the text files).
        caption_column (`str`, defaults to `"text"`): caption column, or caption file name under the folder.
        video_column (`str`, defaults to `"video"`): video column, or video-path file name under the folder.
        dataset_config_name (`str`, *optional*): configuration of a Hub dataset.
        split (`str`, defaults to `"train"`): split to read.
        cache_dir (`str`, *optional*): `datasets` cache folder.
        revision (`str`, *optional*): revision of a Hub dataset.

    Returns:
        `datasets.Dataset`: the table with its caption column renamed `"caption"` and its video column renamed
        `"video"` (absolute paths or `{"path", "bytes"}` dicts, what `read_video` accepts); other columns are kept.
    """
    if dataset_name is None and instance_data_root is None:
        raise DatasetError(
            "Pass `dataset_name` (Hub name, saved dataset, CSV/JSON file) or `instance_data_root` (a folder of clips)."
        )
    if instance_data_root is not None and not Path(instance_data_root).is_dir():
        raise DatasetError(f"`instance_data_root={os.fspath(instance_data_root)!r}` is not a folder.")
    check_local_path(dataset_name, "dataset_name")
    if dataset_name is None:
        root = Path(instance_data_root)
        return _resolve_paths(_from_text_files(root, caption_column, video_column), root)
    table = _load_table(dataset_name, dataset_config_name, split, cache_dir, revision)
    table = _standardise_columns(table, caption_column, video_column)
    if instance_data_root is not None:
        return _resolve_paths(table, Path(instance_data_root))
    if os.path.isfile(dataset_name):
        return _resolve_paths(table, Path(dataset_name).resolve().parent)
    return table


def check_some_clip_reads(table: datasets.Dataset, clip: ClipSpec) -> None:
    """Raises `DatasetError` when no clip of `table` can be read as `clip` asks (a missing file, or clips shorter than
    `clip.num_frames`, as the default 49 frames on short clips): a check to run before any model loads. Clips are
    read in order up to the first that decodes, so a usable table costs one decode.

    Args:
        table (`datasets.Dataset`): a table of `load_video_dataset`, with its `"video"` column.
        clip (`ClipSpec`): how the clips are read.
    """
    videos = table.select_columns([VIDEO])
    first = None
    for row in range(len(videos)):
        try:
            read_video(videos[row][VIDEO], clip)
            return
        except VideoDecodeError as err:
            first = first or err
    if first is not None:
        raise DatasetError(
            f"None of the {len(videos)} clips can be read, e.g. {first.source!r}: {first.reason} Check the video "
            "paths (`video_column`) and `max_num_frames`."
        )
