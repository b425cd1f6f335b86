"""Synthetic test clips (a white square moving right) and a training folder of them, written as mp4 files."""

from __future__ import annotations


def write_test_clip(
    path,
    *,
    num_frames: int = 12,
    height: int = 96,
    width: int = 160,
    square: int = 24,
    speed: int = 6,
    gray_step: int = 0,
    fps: int = 8,
) -> None:
    """Writes an mp4 (H.264 via imageio-ffmpeg) of a white square moving right on a dark still background.

    Frame `t` has its square's left edge at `4 + speed * t`, vertically centred; with `gray_step > 0` the background
    of frame `t` is the uniform gray `16 + gray_step * t` instead (to identify frames after decoding).
    """
    import imageio
    import numpy as np

    with imageio.get_writer(path, fps=fps, codec="libx264", quality=9, macro_block_size=1) as writer:
        for t in range(num_frames):
            frame = np.full((height, width, 3), 16 + gray_step * t, dtype=np.uint8)
            top, left = (height - square) // 2, 4 + speed * t
            frame[top : top + square, left : left + square] = 240
            writer.append_data(frame)


def write_test_dataset(
    root, *, num_clips: int = 4, caption: str = "a white square moves right", num_frames: int = 12
) -> None:
    """A folder for `--instance_data_root`: `num_clips` `write_test_clip` clips of `num_frames` frames (speeds 3, 4,
    ...) under `clips/`, `prompts.txt` and `videos.txt` with one caption and one relative path per line."""
    from pathlib import Path

    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    speeds = range(3, 3 + num_clips)
    for speed in speeds:
        write_test_clip(root / "clips" / f"{speed}.mp4", num_frames=num_frames, speed=speed)
    (root / "prompts.txt").write_text("".join(f"{caption} at speed {speed}\n" for speed in speeds))
    (root / "videos.txt").write_text("".join(f"clips/{speed}.mp4\n" for speed in speeds))
