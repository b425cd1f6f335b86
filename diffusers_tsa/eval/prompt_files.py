"""The benchmarks' prompt files, fetched from where the paper's evaluation took them and checked against their SHA-256.

    python -m eval.prompt_files --output_dir prompts

writes `prompts/videophy/` (VideoREPA's `videophy.txt` and `videophy_detailed.txt`, VideoPhy's test labels
`reference.csv`), `prompts/videophy2/` (VideoREPA's `videophy2.csv`, the published `prompt-upsampled-test.csv`) and
`prompts/vbench/` (VBench's `VBench_full_info.json`, NOVA's dense prompts as `nova_dense_prompts.json`), each from
its repository at a fixed commit (`PROMPT_FILES`). A file is kept only when its SHA-256 is the published file's; a
file already there with that checksum is not fetched again. `--from_dir DIR` copies the files from `DIR` (laid out
as the output, e.g. from another machine) instead of downloading them, with the same checks. VideoPhy's and
VideoPhy2's Hub datasets (`videophysics/...`, `eval.generate`'s defaults) need no file.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from .common import EvalInputError, exit_on_user_error, logger, setup_logging


_VIDEOREPA = "https://raw.githubusercontent.com/aHapBean/VideoREPA"


@dataclasses.dataclass(frozen=True)
class PromptFile:
    """One published prompt file.

    Args:
        path (`str`): where it goes under the output folder, `{benchmark}/{name}`.
        url (`str`): where it is published, at a fixed commit.
        sha256 (`str`): the SHA-256 of the published file, hex.
    """

    path: str
    url: str
    sha256: str


PROMPT_FILES = (
    # Table 1: VideoREPA's inference/ prompts, and VideoPhy's public test CSV as VideoREPA's evaluation ships it.
    PromptFile(
        "videophy/videophy.txt",
        f"{_VIDEOREPA}/b0c701ad0456350318485bbb38ccf85584563276/inference/videophy.txt",
        "7c8ffefb8dfd5c8fde7e76cd0996007000027ba255527d22b4486f3e266b6962",
    ),
    PromptFile(
        "videophy/videophy_detailed.txt",
        f"{_VIDEOREPA}/b0c701ad0456350318485bbb38ccf85584563276/inference/videophy_detailed.txt",
        "34f5e7054c36744711435b1d6e199038b9ad861caf06b84c8bfeb61d1197dfcc",
    ),
    PromptFile(
        "videophy/reference.csv",
        f"{_VIDEOREPA}/8c702853a57acdbb48d966db2bbb88ceb9b586c4/evaluation/videophy/reference.csv",
        "15bf81d7f188c0c8fb6f5a122d811ce8ff5b4acb4a9b96ce5eb15aa03ca38a7d",
    ),
    # Table 2: VideoREPA's evaluation/VIDEOPHY2/ (590 prompts; the published upsampled test file has 591).
    PromptFile(
        "videophy2/videophy2.csv",
        f"{_VIDEOREPA}/8c702853a57acdbb48d966db2bbb88ceb9b586c4/evaluation/VIDEOPHY2/videophy2.csv",
        "c3a19c20a38cf8b64de1bfcbda0bf01ff1423c7f676d04d31685866a82c22fbb",
    ),
    PromptFile(
        "videophy2/prompt-upsampled-test.csv",
        f"{_VIDEOREPA}/8c702853a57acdbb48d966db2bbb88ceb9b586c4/evaluation/VIDEOPHY2/prompt-upsampled-test.csv",
        "0b9be9fd8d19d855fdf240ecd169802c59549aa71a147da62a0021841715d49f",
    ),
    # Table 3: VBench's prompt suite (the same file as in the vbench 0.1.5 wheel) and NOVA's dense prompts.
    PromptFile(
        "vbench/VBench_full_info.json",
        "https://raw.githubusercontent.com/Vchitect/VBench/90f0973e0176390d02b273012ba43d4c5f76d6aa/vbench/"
        "VBench_full_info.json",
        "5dd2de80ee43cda750b2b72ea7023657c0b90d3702041c7e4608c65dbe50dccd",
    ),
    PromptFile(
        "vbench/nova_dense_prompts.json",
        "https://raw.githubusercontent.com/baaivision/NOVA/e12bd3baa29e428e75479f02472b61e8dbfcf569/evaluations/"
        "vbench/prompts.json",
        "75fb9df4f0484eb646b476ed4dae70d5266457b02be486a552d57d8865e0ba52",
    ),
)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, path: Path) -> None:
    """Write what `url` serves to `path`."""
    with urllib.request.urlopen(url, timeout=60) as response, path.open("wb") as f:
        shutil.copyfileobj(response, f)


def fetch_prompt_files(
    output_dir: Path,
    files: Sequence[PromptFile] = PROMPT_FILES,
    fetch: Callable[[PromptFile, Path], None] | None = None,
) -> list[Path]:
    """Fetch `files` into `output_dir` and check each against its SHA-256; return their paths.

    Args:
        output_dir (`Path`): the folder to write `{benchmark}/{name}` files to.
        files (`Sequence[PromptFile]`, defaults to `PROMPT_FILES`): the files.
        fetch (`Callable[[PromptFile, Path], None]`, *optional*): writes a file's content to the given path; by
            default downloads its `url`.

    Raises:
        `EvalInputError`: a fetched file whose checksum is not the published one (it is not kept).
    """
    fetch = fetch or (lambda file, path: download(file.url, path))
    paths = []
    for file in files:
        path = output_dir / file.path
        paths.append(path)
        if path.is_file() and sha256_of(path) == file.sha256:
            logger.info("%s is there and checks out", path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fetch(file, tmp)
            got = sha256_of(tmp)
            if got != file.sha256:
                raise EvalInputError(
                    f"{file.path} from {file.url} has SHA-256 {got}, not the published file's {file.sha256}; it was "
                    "not kept. Check the source (a proxy or a changed file?) and try again."
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("%s: fetched and checked", path)
    return paths


def copy_from(folder: Path) -> Callable[[PromptFile, Path], None]:
    """A `fetch` for `fetch_prompt_files` that copies `folder/{benchmark}/{name}` instead of downloading."""

    def fetch(file: PromptFile, path: Path) -> None:
        source = folder / file.path
        if not source.is_file():
            raise EvalInputError(f"--from_dir {folder} has no {file.path}; it is published at {file.url}.")
        shutil.copyfile(source, path)

    return fetch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("prompts"), help="Where to write (default prompts).")
    parser.add_argument(
        "--from_dir",
        type=Path,
        default=None,
        help="Copy the files from this folder (laid out as --output_dir) instead of downloading them.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = parse_args(argv)
    fetch = copy_from(args.from_dir) if args.from_dir else None
    for path in fetch_prompt_files(args.output_dir, fetch=fetch):
        print(path)


if __name__ == "__main__":
    exit_on_user_error(main)
