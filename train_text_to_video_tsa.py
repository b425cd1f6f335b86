#!/usr/bin/env python
"""`accelerate launch train_text_to_video_tsa.py ...` from a clone of the repository: the training command
`diffusers_tsa.train_text_to_video_tsa` (`accelerate launch -m diffusers_tsa.train_text_to_video_tsa ...`)."""

import runpy


if __name__ == "__main__":
    runpy.run_module("diffusers_tsa.train_text_to_video_tsa", run_name="__main__", alter_sys=True)
