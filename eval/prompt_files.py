"""`python -m eval.prompt_files` from a clone of the repository: the command `python -m diffusers_tsa.eval.prompt_files`."""

import runpy


if __name__ == "__main__":
    runpy.run_module("diffusers_tsa.eval.prompt_files", run_name="__main__", alter_sys=True)
