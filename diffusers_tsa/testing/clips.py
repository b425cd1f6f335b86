"""Synthetic clips written as mp4 files: test clips (a white square moving right) and a training folder of them, and
the physics clips of the demo and the benchmarks (a ball thrown, falling under gravity and bouncing: `render_ball`)."""

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


#: The balls' colours (RGB) of the synthetic physics clips.
BALL_COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40)}
#: The physics clips' sky and floor (RGB).
SKY, FLOOR = (200, 215, 235), (120, 100, 80)


def render_ball(
    colour: str,
    vx: float,
    vy: float,
    *,
    num_frames: int = 17,
    height: int = 96,
    width: int = 144,
    radius: float = 7,
    start: tuple[float, float] = (12.0, 30.0),
    floor_height: int = 12,
    gravity: float = 1.6,
    restitution: float = 0.7,
    trajectory: bool = False,
):
    """A ball thrown from `start` (x, y) with velocity (`vx`, `vy`) pixels per frame, falling under `gravity` (pixels
    per frame squared), bouncing on the floor (the bottom `floor_height` rows) with `restitution` and off the side
    walls: `(num_frames, height, width, 3)` uint8 frames.

    With `trajectory=True` it returns `(frames, centres)` instead, `centres` the ball's `(num_frames, 2)` float (x, y)
    in pixels, as drawn (the ground truth of a physics metric).
    """
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    floor = height - floor_height
    x, y = start
    frames, centres = [], []
    for _ in range(num_frames):
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = SKY
        frame[floor:] = FLOOR
        frame[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = BALL_COLOURS[colour]
        frames.append(frame)
        centres.append((x, y))
        vy += gravity
        x, y = x + vx, y + vy
        if y > floor - radius:  # bounce, losing energy
            y, vy = floor - radius, -vy * restitution
        if not radius <= x <= width - radius:  # a wall sends it back
            vx = -vx
            x = min(max(x, radius), width - radius)
    frames = np.stack(frames)
    return (frames, np.array(centres, dtype=np.float64)) if trajectory else frames
