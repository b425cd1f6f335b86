"""A CPU-scale physics experiment: does aligning a student's correspondences with a structured teacher's change how
its generated balls move? Run it with `python -m benchmarks.physics_toy` (see `__main__`).

- `scene`: the clips (the demo's ball renderer, ground-truth trajectories kept), captions and the train / held-out
  split of initial conditions.
- `physics`: the ball detector and the physics metric (parabola fit between bounces, fitted g, existence and size).
- `models`: the tiny student (an LTX-Video pipeline whose patch VAE is trained to reconstruct the clips) and the
  teacher (a tiny VideoMAE trained by masked autoencoding, saved as a `VideoMAEModel` the project loads).
- `arms`: training the base and each arm's fine-tune with the library's `Alignment`, the held-out agreement probe,
  and generation.
- `report`: the table and the figure.
"""
