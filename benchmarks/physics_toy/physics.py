"""The physics metric: a ball detector on each frame and a constant-gravity fit of its track between bounces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffusers_tsa.testing.clips import FLOOR, SKY


#: A pixel is the ball's when its colour is farther than this (RGB Euclidean) from both the sky and the floor.
COLOUR_DISTANCE = 60.0
#: The ball exists in a frame when it covers at least this share of the true disk's area, and keeps its size when
#: its area is within [1 / SIZE_TOLERANCE, SIZE_TOLERANCE] times the true one.
MIN_AREA_SHARE, SIZE_TOLERANCE = 0.3, 1.6


def ball_pixels(frames: np.ndarray) -> np.ndarray:
    """Whether each pixel of RGB frames `(..., H, W, 3)` (0-255, any dtype) is the ball's: its colour is neither the
    sky's nor the floor's. Returns bool `(..., H, W)`."""
    pixels = frames.astype(np.float64)
    distance = np.minimum(*(np.linalg.norm(pixels - np.array(c, np.float64), axis=-1) for c in (SKY, FLOOR)))
    return distance > COLOUR_DISTANCE


def detect(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ball pixels of uint8 frames `(T, H, W, 3)`: returns `(centres (T, 2) float (x, y), areas (T,) int)`, each
    centre the centroid of the pixels `ball_pixels` finds (NaN where there is none)."""
    ball = ball_pixels(frames)
    areas = ball.sum(axis=(1, 2))
    yy, xx = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = np.stack([(ball * xx).sum(axis=(1, 2)) / areas, (ball * yy).sum(axis=(1, 2)) / areas], axis=1)
    return centres, areas


def bounce_segments(y: np.ndarray) -> list[np.ndarray]:
    """Indices of the frames between bounces. A bounce frame is one after which the ball rises (smaller y) having
    not risen into it: there the renderer clamps the ball to the floor mid-step, so it lies on neither parabola and
    belongs to no segment."""
    bounces = [i for i in range(1, len(y) - 1) if y[i] >= y[i - 1] and y[i] > y[i + 1]]
    edges = [-1, *bounces, len(y)]
    return [np.arange(a + 1, b) for a, b in zip(edges, edges[1:]) if b > a + 1]


def fit_gravity(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The best constant-gravity fit of a track `y(t)` (pixels, frames) cut at its bounces: each segment its own
    start and velocity, one shared g. Returns `(g, rms residual in pixels)` (NaN when too few points)."""
    segments = [s for s in bounce_segments(y) if len(s) >= 2]
    rows = sum(len(s) for s in segments)
    if rows < 2 * len(segments) + 2:
        return float("nan"), float("nan")
    design = np.zeros((rows, 2 * len(segments) + 1))
    target = np.zeros(rows)
    row = 0
    for k, seg in enumerate(segments):
        tt = t[seg] - t[seg[0]]
        design[row : row + len(seg), 2 * k] = 1.0
        design[row : row + len(seg), 2 * k + 1] = tt
        design[row : row + len(seg), -1] = 0.5 * tt**2
        target[row : row + len(seg)] = y[seg]
        row += len(seg)
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = design @ solution - target
    return float(solution[-1]), float(np.sqrt(np.mean(residual**2)))


@dataclass(frozen=True)
class Physics:
    """The metric of one clip.

    Attributes:
        track_error (`float`): rms distance (pixels) of the detected ball from its best constant-gravity parabola
            (y) and straight line (x) between bounces, on the frames where it exists.
        gravity (`float`): the fitted g (pixels / frame^2).
        exists (`float`): share of frames where the ball exists and keeps its size.
    """

    track_error: float
    gravity: float
    exists: float


def clip_physics(frames: np.ndarray, true_area: float) -> Physics:
    """`Physics` of uint8 frames `(T, H, W, 3)` whose ball, drawn, covers `true_area` pixels."""
    centres, areas = detect(frames)
    present = areas >= MIN_AREA_SHARE * true_area
    sized = present & (areas <= SIZE_TOLERANCE * true_area) & (areas >= true_area / SIZE_TOLERANCE)
    t = np.flatnonzero(present).astype(np.float64)
    if len(t) < 4:
        return Physics(float("nan"), float("nan"), float(sized.mean()))
    x, y = centres[present, 0], centres[present, 1]  # no throw reaches a wall: x moves at constant speed
    gravity, y_error = fit_gravity(t, y)
    line = np.polyval(np.polyfit(t, x, 1), t) if len(t) >= 2 else x
    x_error = float(np.sqrt(np.mean((line - x) ** 2)))
    return Physics(float(np.hypot(y_error, x_error)), gravity, float(sized.mean()))


def token_tracking(features: np.ndarray, centres: np.ndarray, *, patch: int, tubelet: int, first: int = 1) -> float:
    """How well features follow the ball: for each token frame, the token holding the ball's centre is a query, and
    for each other token frame, whether its most similar token (cosine) is the one holding the ball there. Returns
    the share of such (query, frame) pairs that find the ball; chance is one over the tokens per frame.

    Args:
        features (`np.ndarray`): one clip's features `(F, H, W, C)`.
        centres (`np.ndarray`): the ball's `(T, 2)` (x, y) in the clip's pixels.
        patch (`int`): pixels per token side; tubelet (`int`): frames per token frame; first (`int`): the clip frame
            of token frame 0 (1 when the teacher drops frame 0).
    """
    frames, height, width, _ = features.shape
    flat = features.reshape(frames, height * width, -1)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=-1, keepdims=True), 1e-8)
    where = [
        min(int(centres[first + tubelet * f, 1]) // patch, height - 1) * width
        + min(int(centres[first + tubelet * f, 0]) // patch, width - 1)
        for f in range(frames)
    ]
    hits = [
        int(np.argmax(flat[g] @ flat[f, where[f]]) == where[g]) for f in range(frames) for g in range(frames) if g != f
    ]
    return float(np.mean(hits))
