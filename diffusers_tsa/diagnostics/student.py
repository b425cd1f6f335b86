"""The student's features of clips at one noise level, as training computes them: a model run with its alignment block
hooked, projected onto the teacher grid by a trained projector, or resampled there without one."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from ..adapters.adapter import ModelAdapter
from ..errors import UsageError
from ..projector import AlignmentProjector, GridResampling


Grid = tuple[int, int, int]


@torch.no_grad()
def student_features(
    adapter: ModelAdapter,
    videos: torch.Tensor,
    *,
    depth: int,
    timestep: int,
    prompts: str | Sequence[str] = "",
    projector: AlignmentProjector | None = None,
    teacher_grid: Grid | None = None,
    drop_first_frame: bool | None = True,
    moments: torch.Tensor | None = None,
    text: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The student's features of clips at one noise level (paper Eq. 5), as training computes them.

    The clips are encoded (`encode_videos`), noised at `timestep` and run through the adapter's training forward
    (`diffusion_loss`, in train mode as training runs it) with block `depth` hooked; its video tokens
    (`alignment_tokens`) are projected by `projector`. Without a projector (a base model), the raw block tokens are
    brought to `teacher_grid` instead: the first latent frame dropped as a projector would drop it
    (`GridResampling`), then area-resampled (averaged where the grid shrinks, repeated where it grows). Their width
    stays the model's; correspondences only compare tokens of one model, so they need no common width.

    Args:
        adapter (`ModelAdapter`): the student, e.g. `ADAPTERS[spec.family].from_pretrained(spec)`, or the training
            script's own.
        videos (`torch.Tensor`): clips in [-1, 1] of shape `(B, T, C, H, W)`.
        depth (`int`): the aligned block, counted from 1.
        timestep (`int`): noise level in `[0, num_train_timesteps)` (flow matching: `sigma = timestep / 1000`).
        prompts (`str` or `Sequence[str]`, defaults to `""`): the text conditioning, one for all clips or one each.
        projector (`AlignmentProjector`, *optional*): the trained projector h.
        teacher_grid (`tuple[int, int, int]`, *optional*): where raw tokens go without a projector.
        drop_first_frame (`bool`, *optional*, defaults to `True`): whether the teacher skips pixel frame 0
            (`TeacherInput.drop_first_frame`), for raw tokens.
        moments (`torch.Tensor`, *optional*): the clips' `latent_moments` `(B, 2C, F, H, W)`, computed beforehand
            (or precomputed): a latent is sampled from them instead of encoding `videos`.
        text (`dict[str, torch.Tensor]`, *optional*): the prompts' `text_encoder_outputs`, used instead of encoding
            `prompts`.

    Returns:
        `torch.Tensor`: `(B, F, H, W, C)` features on the teacher grid, fp32; `C` is the teacher's width with a
        projector, the block's without.
    """
    if projector is None and teacher_grid is None:
        raise UsageError("Pass a `projector`, or the `teacher_grid` the raw tokens are resampled to.")
    batch = videos.shape[0]
    prompts = [prompts] * batch if isinstance(prompts, str) else list(prompts)
    latents = adapter.encode_videos(videos) if moments is None else adapter.sample_latents(moments)
    conditioning = adapter.encode_prompts(prompts) if text is None else adapter.conditioning(text)
    transformer, training = adapter.transformer, adapter.transformer.training
    timesteps = torch.full((batch,), timestep, dtype=torch.long)
    with adapter.feature_extractor(transformer, depth) as extractor, extractor.capture() as captured:
        transformer.train()
        try:
            adapter.diffusion_loss(transformer, latents, conditioning, timesteps=timesteps)
        finally:
            transformer.train(training)
    tokens = adapter.alignment_tokens(captured.hidden_states, batch).float()  # (B, F_s * H_s * W_s, D)
    if projector is not None:
        return projector(tokens.to(next(projector.parameters()))).float()
    num_frames, _, height, width = videos.shape[1:]
    student_grid = adapter.spec.token_grid(num_frames, height, width)
    return resample_tokens(tokens, student_grid, teacher_grid, drop_first_frame=drop_first_frame)


def resample_tokens(
    tokens: torch.Tensor, student_grid: Grid, teacher_grid: Grid, *, drop_first_frame: bool | None = True
) -> torch.Tensor:
    """Raw block tokens brought to the teacher grid with no learned weight: the first frame dropped as
    `GridResampling.between` decides, then area resampling (`F.interpolate`: averaged where the grid shrinks, repeated
    where it grows).

    Args:
        tokens (`torch.Tensor`): a block's video tokens, shape `(B, F_s * H_s * W_s, D)`.
        student_grid (`tuple[int, int, int]`): `(F_s, H_s, W_s)`.
        teacher_grid (`tuple[int, int, int]`): `(F_t, H_t, W_t)`.
        drop_first_frame (`bool`, *optional*, defaults to `True`): drop (True) or keep (False) the first student
            frame; `None` lets `GridResampling.between` choose.

    Returns:
        `torch.Tensor`: `(B, F_t, H_t, W_t, D)`.

    Raises:
        `GridError`: when the grids cannot be paired (see `GridResampling.between`).
    """
    resampling = GridResampling.between(student_grid, teacher_grid, drop_first_frame)
    f, h, w = student_grid
    grid = rearrange(tokens, "b (f h w) d -> b d f h w", f=f, h=h, w=w)[:, :, int(resampling.drop_first_frame) :]
    return rearrange(F.interpolate(grid, size=tuple(teacher_grid), mode="area"), "b d f h w -> b f h w d")
