"""Runs inside the user's VBench environment (launched by `python -m eval.vbench run`): VBench's Python API.

VBench's `vbench evaluate` CLI always initialises NCCL and fails without a GPU; its API runs on any device. Each
`--group NAME FOLDER DIMENSION...` is one evaluation of those dimensions on the videos of FOLDER (VBench evaluates
each dimension on the folder of its prompt list), written to `{name}_{NAME}_eval_results.json`; all of them are
merged into `{name}_eval_results.json`. `--static_filter SOURCE RESULT` first runs VBench's static filter
(`vbench static_filter`) on SOURCE, which writes the static videos to RESULT/filtered_videos. This file imports
nothing from this project, since the VBench environment (transformers 4.33, numpy < 2) does not have it installed.
"""

import argparse
import json
import os
import shutil
import sys


# Run as a script, this file's folder comes first on sys.path, and there `vbench` is this package's vbench.py.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import torch  # noqa: E402
from vbench import VBench  # noqa: E402


def static_filter(source, result):
    """VBench's static filter over `source`, through its own command-line parser (its defaults: RAFT-things,
    temporal flickering's prompts); RAFT's weights are fetched as VBench fetches them for dynamic degree."""
    from vbench.cli import static_filter as vbench_static_filter
    from vbench.utils import init_submodules

    init_submodules(["dynamic_degree"])
    shutil.rmtree(os.path.join(result, "filtered_videos"), ignore_errors=True)  # no videos of an earlier run
    parser = argparse.ArgumentParser(prog="vbench")
    vbench_static_filter.register_subparsers(parser.add_subparsers())
    args = parser.parse_args(["static_filter", "--videos_path", source, "--result_path", result])
    args.func(args)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full_info", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar="NAME FOLDER DIMENSION")
    parser.add_argument("--static_filter", nargs=2, default=None, metavar=("SOURCE", "RESULT"))
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.static_filter:
        static_filter(*args.static_filter)
    results = {}
    for group, folder, *dimensions in args.group:
        name = f"{args.name}_{group}"
        VBench(device, args.full_info, args.output_dir).evaluate(
            videos_path=folder, name=name, dimension_list=dimensions, mode="vbench_standard"
        )
        with open(os.path.join(args.output_dir, f"{name}_eval_results.json"), encoding="utf-8") as f:
            results.update(json.load(f))
    with open(os.path.join(args.output_dir, f"{args.name}_eval_results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
