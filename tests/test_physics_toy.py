"""The physics experiment's metric (hand expectations on rendered clips), its oracle teacher, and its fast check: one
seed, few steps, the alignment term must move the student's held-out correspondences toward a structured teacher's,
so that a change that cuts the alignment gradient fails here:

- with the masked-autoencoding teacher, the probe's tempered KL (projected as the training probe measures it) falls
  below `KL_SHARE` of its value with the same projector untrained; its top-1 agreement does not move at this scale
  (the teacher's tempered correspondences are nearly flat);
- with the oracle teacher (the clips' object maps, sharp correspondences), the probe's top-1 agreement rises by more
  than `TOP1_MARGIN`, and does not without the alignment term.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.physics_toy import arms, models, physics, scene


#: M-TSA's steps must bring the held-out tempered KL below this share of its start (measured: about 0.01).
KL_SHARE = 0.5
#: With the oracle teacher, M-TSA's steps must raise the held-out top-1 agreement by more than this (measured: 0.273
#: -> 0.371, and 0.273 -> 0.268 with the alignment weight at 0).
TOP1_MARGIN = 0.05
#: The reduced run: teacher pre-training steps, fine-tuning steps and learning rate.
TEACHER_STEPS, STEPS, LEARNING_RATE = 20, 15, 1e-3


def test_metric_on_rendered_clips():
    """Real clips fit constant gravity exactly between bounces: error 0, g the renderer's, the ball always there."""
    _, held_out = scene.split()
    for throw in held_out[:3]:
        frames, centres = throw.render()
        detected, areas = physics.detect(frames)
        np.testing.assert_allclose(detected[1:-1], centres[1:-1], atol=0.35)  # sub-pixel disk centroids
        result = physics.clip_physics(frames, float(areas[0]))
        assert result.track_error < 0.2 and abs(result.gravity - scene.GRAVITY) < 0.05 and result.exists == 1.0
    # A ball that stops falling halfway is not constant gravity; one that vanishes does not exist.
    frames, _ = held_out[0].render()
    frozen = np.concatenate([frames[:5], np.repeat(frames[4:5], 4, axis=0)])
    assert physics.clip_physics(frozen, float(areas[0])).track_error > 0.2
    empty = np.repeat(frames[:1] * 0 + np.array(physics.SKY, np.uint8), 9, axis=0)
    assert physics.clip_physics(empty, float(areas[0])).exists == 0.0


def disk_share(centres: np.ndarray, radius: float) -> torch.Tensor:
    """By hand from the renderer's trajectory: the share of each teacher token's pixels (its 2 frames x 8 x 8) within
    `radius` of the ball's centre, `(F, H, W)` for teacher frames 1..8."""
    yy, xx = np.mgrid[0 : scene.HEIGHT, 0 : scene.WIDTH] + 0.5
    inside = np.stack([(xx - x) ** 2 + (yy - y) ** 2 <= radius**2 for x, y in centres[1:]])  # (8, H, W)
    tokens = inside.reshape(4, 2, 4, 8, 8, 8).transpose(0, 2, 4, 1, 3, 5).reshape(4, 4, 8, -1)
    return torch.from_numpy(tokens.mean(-1))


def test_oracle_features_are_the_object_maps(tmp_path):
    """On the held-out clips: a token the ball covers is the ball's direction (cosine 1 with any other such token, in
    any clip), a token far from it is its position's direction (cosine 0 with the ball's, 1 with the same place in
    every frame)."""
    _, held_out = scene.split()
    renders = [throw.render() for throw in held_out]
    teacher = models.OracleTeacher(models.random_teacher(tmp_path, seed=0))
    features = torch.nn.functional.normalize(teacher.encode(scene.videos([f for f, _ in renders])).float(), dim=-1)
    near = torch.stack([disk_share(centres, scene.RADIUS) for _, centres in renders])
    far = torch.stack([disk_share(centres, scene.RADIUS + 2.0) for _, centres in renders]) == 0
    ball, background = features[near >= 0.3], features[far]  # BALL_SHARE is 0.25
    assert len(ball) >= 4 and len(background) > 100
    torch.testing.assert_close(ball @ ball.T, torch.ones(len(ball), len(ball)), atol=1e-5, rtol=0)
    torch.testing.assert_close(ball @ background.T, torch.zeros(len(ball), len(background)), atol=1e-5, rtol=0)
    clip, h, w = far.all(1).nonzero()[0]  # a place the ball never comes near in one clip
    torch.testing.assert_close(features[clip, :, h, w] @ features[clip, 0, h, w], torch.ones(features.shape[1]))


def reduced_run(folder, *, oracle: bool, weights: tuple[float, ...]) -> dict:
    """M-TSA's held-out (top-1, tempered KL), projected as the training probe measures them, with its projector as
    initialised (`(weight, 0)`) and after `STEPS` steps with each alignment weight (`(weight, STEPS)`); the same seed,
    so the same initial projector and batches."""
    torch.set_num_threads(1)
    train, held_out = scene.split()
    train_videos = scene.videos([t.render()[0] for t in train])
    held_videos = scene.videos([t.render()[0] for t in held_out])
    if oracle:
        teacher = models.OracleTeacher(models.random_teacher(folder / "teacher", seed=0))
    else:
        teacher, _ = models.train_teacher(folder / "teacher", train_videos, steps=TEACHER_STEPS, seed=0)
    adapter = arms.load_student(models.save_student(folder / "student", models.pca_vae(train_videos), seed=0))
    train_clips = arms.ClipSet.encode(adapter, teacher, train_videos, [t.caption for t in train])
    held_clips = arms.ClipSet.encode(adapter, teacher, held_videos, [t.caption for t in held_out])
    base = arms.snapshot(adapter)
    agreement = {}
    for weight in weights:
        for steps in (0, STEPS):
            adapter.transformer.load_state_dict(base)
            settings = {"lr": LEARNING_RATE, "batch_size": 8, "data_seed": 0, "seed": 0, "weight": weight}
            _, alignment = arms.train(adapter, train_clips, loss="m-tsa", teacher=teacher, steps=steps, **settings)
            agreement[weight, steps] = arms.agreement(adapter, teacher, held_clips, projector=alignment.projector)
    return agreement


def test_alignment_moves_held_out_agreement_toward_the_teacher(tmp_path):
    run = reduced_run(tmp_path, oracle=False, weights=(1.0,))
    assert run[1.0, STEPS][1] < KL_SHARE * run[1.0, 0][1], run


def test_alignment_to_the_oracle_raises_held_out_top1_agreement(tmp_path):
    run = reduced_run(tmp_path, oracle=True, weights=(1.0, 0.0))
    assert run[1.0, STEPS][0] > run[1.0, 0][0] + TOP1_MARGIN, run
    assert run[0.0, STEPS][0] < run[0.0, 0][0] + TOP1_MARGIN, run  # the rise is the alignment term's
