"""Runs the training script given as first argument, then writes each process's trainable-weight checksum to
`$CHECKSUM_DIR/<process index>.txt`, so that a test can check that data-parallel processes end with the same weights
(the script itself logs nothing of the kind)."""

import os
import runpy
import sys
from pathlib import Path

import accelerate


_end_training = accelerate.Accelerator.end_training


def end_training(self):
    (model,) = self._models
    checksum = sum(p.detach().double().sum().item() for p in model.parameters() if p.requires_grad)
    Path(os.environ["CHECKSUM_DIR"], f"{self.process_index}.txt").write_text(f"{checksum:.12e}")
    _end_training(self)


accelerate.Accelerator.end_training = end_training
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
