"""Runs the training script given as first argument; when training ends, writes the class names of every
`torch.nn.Module` still alive in the process to `$MODULES_FILE`, one a line, so that a test can check which models a
run loaded (the script itself logs nothing of the kind)."""

import gc
import os
import runpy
import sys
from pathlib import Path

import accelerate
import torch


_end_training = accelerate.Accelerator.end_training


def end_training(self):
    alive = {type(o).__name__ for o in gc.get_objects() if isinstance(o, torch.nn.Module)}
    Path(os.environ["MODULES_FILE"]).write_text("\n".join(sorted(alive)) + "\n")
    _end_training(self)


accelerate.Accelerator.end_training = end_training
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
