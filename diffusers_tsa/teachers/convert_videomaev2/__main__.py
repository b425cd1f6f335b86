"""`python -m diffusers_tsa.teachers.convert_videomaev2 SRC DST`: converts a VideoMAEv2 checkpoint (OpenGVLab's
layout) into a transformers `VideoMAEModel` folder (config.json + model.safetensors), for `--teacher`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ...cli import run
from ...errors import UsageError
from . import convert_videomaev2, read_videomaev2


#: This command's arguments, for the converter arguments its error messages name.
FLAGS = {
    "name_or_path": "src",
    "dst": "dst",
    "num_attention_heads": "--num_attention_heads",
    "image_size": "--image_size",
    "num_frames": "--num_frames",
}


def _make_folder(dst: str) -> None:
    """Creates the output folder `dst`, or refuses one that cannot be created or written to."""
    try:
        Path(dst).mkdir(parents=True, exist_ok=True)
        reason = None if os.access(dst, os.W_OK) else "it is not writable"
    except OSError as err:
        reason = err.strerror or str(err)
    if reason:
        raise UsageError(f"`dst={dst!r}` cannot be the output folder ({reason}); give a folder you can write to.")


def _convert(args: argparse.Namespace) -> None:
    options = {key: getattr(args, key) for key in ("num_attention_heads", "image_size", "num_frames")}
    read_videomaev2(args.src, shapes_only=True, **options)  # every mistake, before a weight is read or a folder made
    _make_folder(args.dst)
    model = convert_videomaev2(args.src, **options)
    model.save_pretrained(args.dst)
    print(f"Wrote {args.dst} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters).")


def main(argv: list[str] | None = None) -> None:
    """The command line; a mistake ends it with one `error: ...` line that names the argument (exit status 1)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="VideoMAEv2 checkpoint, e.g. vit_b_k710_dl_from_giant.pth.")
    parser.add_argument("dst", help="Output folder (config.json + model.safetensors), for `--teacher`.")
    parser.add_argument("--num_attention_heads", type=int, default=None, help="Default: hidden size // 64.")
    parser.add_argument("--image_size", type=int, default=224, help="Training resolution (default 224).")
    parser.add_argument("--num_frames", type=int, default=16, help="Training frames (default 16).")
    args = parser.parse_args(argv)
    run(lambda: _convert(args), FLAGS)


if __name__ == "__main__":
    main()
