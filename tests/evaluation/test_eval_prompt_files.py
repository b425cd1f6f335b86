"""eval.prompt_files: fetched files are kept only with the published checksum (offline: a stand-in downloader, or
copies from a folder); the published files' checksums themselves when the benchmark files are present."""

import hashlib
from pathlib import Path

import pytest

from diffusers_tsa.eval import prompt_files
from diffusers_tsa.eval.common import EvalInputError, exit_on_user_error
from diffusers_tsa.eval.prompt_files import PROMPT_FILES, PromptFile, fetch_prompt_files


DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "eval"


def _file(path: str, content: bytes) -> PromptFile:
    return PromptFile(path, f"https://example.org/{path}", hashlib.sha256(content).hexdigest())


def test_fetched_files_are_checked_and_a_wrong_one_is_not_kept(tmp_path):
    served = {"https://example.org/a/one.txt": b"one\n", "https://example.org/b/two.csv": b"caption\ntwo\n"}
    files = [_file("a/one.txt", b"one\n"), _file("b/two.csv", b"caption\ntwo\n")]
    fetched = []

    def fetch(file, path):
        fetched.append(file.path)
        path.write_bytes(served[file.url])

    paths = fetch_prompt_files(tmp_path, files, fetch)
    assert paths == [tmp_path / "a" / "one.txt", tmp_path / "b" / "two.csv"]
    assert paths[1].read_bytes() == b"caption\ntwo\n" and fetched == ["a/one.txt", "b/two.csv"]
    fetch_prompt_files(tmp_path, files, fetch)  # both there with the right checksum: nothing fetched again
    assert fetched == ["a/one.txt", "b/two.csv"]
    served["https://example.org/b/two.csv"] = b"caption\nedited\n"
    paths[1].write_bytes(b"truncated")
    with pytest.raises(EvalInputError, match=r"b/two.csv from https://example.org/b/two.csv has SHA-256 [0-9a-f]{64}"):
        fetch_prompt_files(tmp_path, files, fetch)
    assert paths[1].read_bytes() == b"truncated" and sorted(p.name for p in paths[1].parent.iterdir()) == ["two.csv"]


def test_the_command_downloads_every_published_file(tmp_path, monkeypatch, capsys):
    """The default fetch downloads each file's URL (a stand-in here: tests never download)."""
    urls = []

    def download(url, path):
        urls.append(url)
        path.write_bytes(b"not the published file")

    monkeypatch.setattr(prompt_files, "download", download)
    with pytest.raises(SystemExit, match=r"^error: videophy/videophy.txt from https://raw.githubusercontent.com/"):
        exit_on_user_error(lambda: prompt_files.main(["--output_dir", str(tmp_path)]))
    assert urls == [PROMPT_FILES[0].url] and not (tmp_path / "videophy" / "videophy.txt").exists()
    assert all(f.url.startswith("https://raw.githubusercontent.com/") and len(f.sha256) == 64 for f in PROMPT_FILES)
    assert [f.path for f in PROMPT_FILES] == [
        "videophy/videophy.txt",
        "videophy/videophy_detailed.txt",
        "videophy/reference.csv",
        "videophy2/videophy2.csv",
        "videophy2/prompt-upsampled-test.csv",
        "vbench/VBench_full_info.json",
        "vbench/nova_dense_prompts.json",
    ]
    with pytest.raises(SystemExit, match=r"^error: --from_dir .* has no videophy/videophy.txt; it is published at"):
        exit_on_user_error(lambda: prompt_files.main(["--output_dir", str(tmp_path), "--from_dir", str(tmp_path)]))


@pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark prompt files not found at {DATA}")
def test_the_published_files_have_the_recorded_checksums(tmp_path, capsys):
    prompt_files.main(["--output_dir", str(tmp_path), "--from_dir", str(DATA)])
    assert capsys.readouterr().out.split() == [str(tmp_path / f.path) for f in PROMPT_FILES]
