"""First-frame conditioning for causal-VAE families (LTX-Video, LTX-2): the clip's own first latent frame is the image.

As `LTXImageToVideoPipeline.prepare_latents` conditions: the first latent frame of the noisy latents is replaced by
the clean latents, a per-token `conditioning_mask` is 1 on that frame's tokens and 0 elsewhere, the transformer sees
per-token timesteps `t * (1 - mask)` (0 on the given frame) and the diffusion loss leaves the conditioning tokens
out. A share `p` of the samples is conditioned (finetrainers' `first_frame_conditioning_p`), the others train T2V.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange, repeat

from .options import TrainingOptions


class FirstFrameConditioning(NamedTuple):
    """The conditioned inputs of one batch.

    Attributes:
        noisy (`torch.Tensor`): noisy latents `(B, C, F, H, W)`, frame 0 clean on the conditioned samples.
        mask (`torch.Tensor`): `(B, F*H*W)` frame-major tokens, 1.0 on the conditioning tokens, 0.0 elsewhere.
    """

    noisy: torch.Tensor
    mask: torch.Tensor


#: finetrainers' and Lightricks' trainers' default share of samples conditioned on their first frame.
DEFAULT_FIRST_FRAME_CONDITIONING_P = 0.1


def first_frame_share(options: TrainingOptions) -> float:
    """The share of samples a run conditions on their first latent frame: 0 for a T2V run, else the options'
    `first_frame_conditioning_p` (`None`, options not made `for_training`: `DEFAULT_FIRST_FRAME_CONDITIONING_P`)."""
    if not options.image_to_video:
        return 0.0
    p = options.first_frame_conditioning_p
    return DEFAULT_FIRST_FRAME_CONDITIONING_P if p is None else float(p)


def conditioned_samples(
    batch_size: int, p: float, device: torch.device | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Which samples of a batch are conditioned on their first frame: bool `(B,)`, each `True` with probability `p`
    (exactly none for `p = 0` and all for `p = 1`, without drawing)."""
    if p <= 0.0:
        return torch.zeros(batch_size, dtype=torch.bool, device=device)
    if p >= 1.0:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    return torch.rand(batch_size, generator=generator, device=device) < p


def condition_first_frame(
    latents: torch.Tensor, noisy: torch.Tensor, conditioned: torch.Tensor
) -> FirstFrameConditioning:
    """Replaces the first latent frame of `noisy` by the clean `latents`' on the `conditioned` samples.

    Args:
        latents (`torch.Tensor`): clean latents `(B, C, F, H, W)`.
        noisy (`torch.Tensor`): the noisy latents `(B, C, F, H, W)` at the drawn sigmas.
        conditioned (`torch.Tensor`): bool `(B,)` (`conditioned_samples`).

    Returns:
        `FirstFrameConditioning`: the noisy latents with the clean first frame, and the token mask `(B, F*H*W)`.
    """
    frames = torch.zeros(latents.shape[0], latents.shape[2], dtype=latents.dtype, device=latents.device)
    frames[:, 0] = conditioned.to(latents.dtype)
    frame_mask = repeat(frames, "b f -> b 1 f h w", h=latents.shape[3], w=latents.shape[4])
    noisy = latents * frame_mask + noisy * (1 - frame_mask)
    return FirstFrameConditioning(noisy, rearrange(frame_mask, "b 1 f h w -> b (f h w)"))


def token_timesteps(timesteps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token timesteps `t * (1 - mask)`: `(B,)` and `(B, N)` -> `(B, N)`, 0 on the conditioning tokens."""
    return timesteps[:, None].to(mask.dtype) * (1 - mask)


def loss_mask(token_mask: torch.Tensor | None) -> torch.Tensor | None:
    """`FlowMatching.loss`'s `mask` for tokens `(B, N, C)`: `(B, N, 1)`, 1 where a token is in the diffusion loss
    (every token but the conditioning ones of `token_mask` `(B, N)`); `None` (every token) without conditioning."""
    return None if token_mask is None else (1 - token_mask.float())[..., None]


def condition_batch(
    latents: torch.Tensor, noisy: torch.Tensor, timestep: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One training batch conditioned on a share `p` of its samples: `(noisy, timestep, token_mask)`, the noisy
    latents `(B, C, F, H, W)` with frame 0 clean on the conditioned samples, the per-token timesteps `(B, F*H*W)` and
    the conditioning tokens `(B, F*H*W)`; unchanged (`timestep` `(B,)`, no mask) for `p = 0`."""
    if p <= 0:
        return noisy, timestep, None
    noisy, token_mask = condition_first_frame(latents, noisy, conditioned_samples(latents.shape[0], p, latents.device))
    return noisy, token_timesteps(timestep, token_mask), token_mask
