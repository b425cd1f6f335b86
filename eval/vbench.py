"""`python -m eval.vbench` from a clone of the repository: the command `python -m diffusers_tsa.eval.vbench`."""

import runpy


if __name__ == "__main__":
    runpy.run_module("diffusers_tsa.eval.vbench", run_name="__main__", alter_sys=True)
