"""Runs inside the user's VBench environment (launched by `python -m eval.vbench run`): VBench's Python API.

VBench's `vbench evaluate` CLI always initialises NCCL and fails without a GPU; its API runs on any device. This
file imports nothing from this project, since the VBench environment (transformers 4.33, numpy < 2) does not have
it installed.
"""

import argparse
import os
import sys


# Run as a script, this file's folder comes first on sys.path, and there `vbench` is this project's eval/vbench.py.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import torch  # noqa: E402
from vbench import VBench  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos_dir", required=True)
    parser.add_argument("--full_info", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--dimensions", nargs="+", required=True)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    VBench(device, args.full_info, args.output_dir).evaluate(
        videos_path=args.videos_dir, name=args.name, dimension_list=args.dimensions, mode="vbench_standard"
    )


if __name__ == "__main__":
    main()
