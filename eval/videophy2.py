"""`python -m eval.videophy2` from a clone of the repository: the command `python -m diffusers_tsa.eval.videophy2`."""

import runpy


if __name__ == "__main__":
    runpy.run_module("diffusers_tsa.eval.videophy2", run_name="__main__", alter_sys=True)
