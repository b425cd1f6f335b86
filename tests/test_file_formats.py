"""Every user file format read as users save them: a byte-order mark (spreadsheet programs write one), Windows line
endings, quoted commas and non-ASCII text; the expectations are the rows written here, byte for byte."""

import codecs
import csv
import io
import json
from pathlib import Path

import pytest

from diffusers_tsa.data import load_video_dataset
from diffusers_tsa.eval.common import iter_csv_rows
from diffusers_tsa.eval.prompts import BENCHMARKS, load_prompts, read_table


#: Captions with a quoted comma, a quote, accents, CJK and an emoji.
CAPTIONS = ['A ball, red and "shiny", rolls.', "Café crème pours — slowly.", "雪が降る 🌨"]
VIDEOS = ["clips/a.mp4", "clips/é b.mp4", "clips/雪.mp4"]


def _save(path: Path, text: str) -> str:
    """Writes `text` as a spreadsheet program does: UTF-8 with a byte-order mark, Windows line endings."""
    path.write_bytes(codecs.BOM_UTF8 + text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8"))
    return str(path)


def _csv(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _tables(columns, rows) -> dict[str, str]:
    """The same table as CSV, JSON and JSON lines."""
    records = [dict(zip(columns, row)) for row in rows]
    return {
        ".csv": _csv(columns, rows),
        ".json": json.dumps(records, ensure_ascii=False, indent=1),
        ".jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
    }


def test_the_saved_files_hold_what_the_tests_expect(tmp_path):
    data = Path(_save(tmp_path / "x.csv", "a\nb\n")).read_bytes()
    assert data == b"\xef\xbb\xbfa\r\nb\r\n"


def test_instance_data_root_text_files(tmp_path):
    _save(tmp_path / "prompts.txt", "\n".join(CAPTIONS) + "\n")
    _save(tmp_path / "videos.txt", "\n".join(VIDEOS) + "\n")
    table = load_video_dataset(instance_data_root=tmp_path, caption_column="prompts.txt", video_column="videos.txt")
    assert table["caption"] == CAPTIONS
    assert table["video"] == [str(tmp_path / v) for v in VIDEOS]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_metadata_tables(tmp_path, suffix):
    text = _tables(("text", "video"), list(zip(CAPTIONS, VIDEOS)))[suffix]
    table = load_video_dataset(_save(tmp_path / f"metadata{suffix}", text))
    assert table["caption"] == CAPTIONS
    assert table["video"] == [str(tmp_path.resolve() / v) for v in VIDEOS]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_eval_tables(tmp_path, suffix):
    rows = [(c, s) for c, s in zip(CAPTIONS, ("solid_solid", "solid_fluid", "fluid_fluid"))]
    text = _tables(("caption", "states_of_matter"), rows)[suffix]
    assert read_table(_save(tmp_path / f"labels{suffix}", text)) == [
        {"caption": c, "states_of_matter": s} for c, s in rows
    ]


def test_eval_prompt_and_upsampled_txt_files(tmp_path):
    prompts = _save(tmp_path / "short.txt", "\n".join(CAPTIONS) + "\n")
    upsampled = _save(tmp_path / "long.txt", "\n".join(f"Detailed: {c}" for c in CAPTIONS) + "\n")
    labels = _save(tmp_path / "labels.csv", _csv(("caption", "states_of_matter"), [(CAPTIONS[1], "solid_fluid")]))
    entries = load_prompts(BENCHMARKS["videophy"], prompts, upsampled, labels)
    assert [e.prompt for e in entries] == CAPTIONS
    assert [e.generation_prompt for e in entries] == [f"Detailed: {c}" for c in CAPTIONS]
    assert [e.category for e in entries] == ["", "solid_fluid", ""]


def test_eval_csv_records(tmp_path):
    # A record spanning two lines (a quoted newline) keeps the line count exact.
    text = _csv(("prompt", "video"), [(CAPTIONS[0], VIDEOS[0]), ("two\nlines", VIDEOS[1]), (CAPTIONS[2], VIDEOS[2])])
    rows = list(iter_csv_rows(Path(_save(tmp_path / "manifest.csv", text)), header=("prompt",)))
    assert rows == [
        (2, {"prompt": CAPTIONS[0], "video": VIDEOS[0]}),
        (3, {"prompt": "two\r\nlines", "video": VIDEOS[1]}),
        (5, {"prompt": CAPTIONS[2], "video": VIDEOS[2]}),
    ]
