"""The experiment's clips: balls thrown from the left, falling under gravity and bouncing on the floor, rendered by
`diffusers_tsa.testing.render_ball` with their ground-truth trajectories, captioned by their initial conditions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffusers_tsa.testing import BALL_COLOURS, render_ball


#: Clip size: 9 frames of 32x64 (the student's VAE patches 8x8 pixels; the teacher sees frames 1..8).
NUM_FRAMES, HEIGHT, WIDTH = 9, 32, 64
#: Ball radius, floor rows, gravity (pixels / frame^2), restitution and the throw's start (x, y), in pixels.
RADIUS, FLOOR_HEIGHT, GRAVITY, RESTITUTION, START = 3.0, 4, 1.0, 0.7, (6.0, 10.0)
#: Initial conditions: colour x horizontal speed x upward speed (pixels per frame).
SPEEDS, UPWARDS = (2, 3, 4, 5), (1, 2, 3)


@dataclass(frozen=True)
class Throw:
    """One clip's initial conditions."""

    colour: str
    speed: int
    upward: int

    @property
    def caption(self) -> str:
        return f"a {self.colour} ball is thrown right at speed {self.speed} and {self.upward} , falls and bounces"

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """`(frames (T, H, W, 3) uint8, centres (T, 2) float (x, y))`."""
        return render_ball(
            self.colour,
            float(self.speed),
            -float(self.upward),
            num_frames=NUM_FRAMES,
            height=HEIGHT,
            width=WIDTH,
            radius=RADIUS,
            start=START,
            floor_height=FLOOR_HEIGHT,
            gravity=GRAVITY,
            restitution=RESTITUTION,
            trajectory=True,
        )


def split() -> tuple[list[Throw], list[Throw]]:
    """All 48 initial conditions as (train, held_out): every sixth combination (one per colour and speed pattern,
    8 in all) is held out, never seen in training."""
    every = [Throw(c, s, u) for c in BALL_COLOURS for s in SPEEDS for u in UPWARDS]
    held_out = every[3::6]
    return [t for t in every if t not in held_out], held_out


def videos(frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 clips `(T, H, W, 3)` -> a float batch `(B, T, 3, H, W)` in [-1, 1]."""
    stacked = torch.from_numpy(np.stack(frames)).float().div(127.5).sub(1.0)
    return stacked.permute(0, 1, 4, 2, 3).contiguous()


def frames_of(videos: torch.Tensor) -> np.ndarray:
    """The inverse of `videos`: `(B, T, 3, H, W)` in [-1, 1] -> uint8 `(B, T, H, W, 3)`."""
    pixels = videos.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return pixels.permute(0, 1, 3, 4, 2).cpu().numpy()
