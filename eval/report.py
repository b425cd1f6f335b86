"""`python -m eval.report` from a clone of the repository: the command `python -m diffusers_tsa.eval.report`."""

import runpy


if __name__ == "__main__":
    runpy.run_module("diffusers_tsa.eval.report", run_name="__main__", alter_sys=True)
