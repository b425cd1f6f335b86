"""The flow-matching objective of Wan and LTX-Video training, as finetrainers and diffusers' SD3 examples train it.

A sample's noise level sigma in (0, 1) is drawn with a weighting scheme (`compute_density_for_timestep_sampling`),
then shifted; `x_t = (1 - sigma) x_0 + sigma * noise`, the transformer sees `t = 1000 sigma` and predicts the
velocity `noise - x_0`; the loss is its MSE, weighted per sample by the scheme (`compute_loss_weighting_for_sd3`).

Noise levels are kept in `[SIGMA_FLOOR, 1]`. The floor, 1e-3, is finetrainers' smallest sigma (it reads sigma from
the scheduler's 1000 levels, the last of which is 1/1000 unshifted), and it bounds the `sigma_sqrt` weight
`sigma^-2` at 1e6 (a floor of 1e-5 let it reach 1e10).

`logit_mean` biases sigma itself, as the SD3 paper draws it: `sigma = sigmoid(N(logit_mean, logit_std))`, so a positive
mean favours noisier samples. finetrainers and diffusers' SD3 example use the draw `u` as an index into the
scheduler's sigmas, which run from 1 down to 1/1000 (`sigma = sigmas[int(1000 u)]`, about `1 - u`): there a positive
`flow_logit_mean` favours cleaner samples. A value copied from their configs biases the other way here: negate it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..choices import WEIGHTING_SCHEMES
from ..errors import UsageError


#: The smallest noise level drawn: finetrainers' (1 / 1000); `sigma_sqrt`'s weight `sigma^-2` stays <= 1e6.
SIGMA_FLOOR = 1e-3


@dataclass(frozen=True)
class FlowMatching:
    """How a flow-matching family draws and weights a training sample's noise level (finetrainers' flag names).

    Args:
        weighting_scheme (`str`, defaults to `"logit_normal"`): one of `WEIGHTING_SCHEMES`.
        logit_mean (`float`, defaults to 0.0): mean of the logit-normal draw of sigma; positive favours noisier
            samples (the opposite of finetrainers' `flow_logit_mean`, see the module's docstring).
        logit_std (`float`, defaults to 1.0): its standard deviation.
        mode_scale (`float`, defaults to 1.29): scale of the `mode` draw.
        shift (`float`, defaults to 1.0): `sigma <- shift sigma / (1 + (shift - 1) sigma)`; above 1 favours noise.
    """

    weighting_scheme: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    shift: float = 1.0

    def __post_init__(self):
        if self.weighting_scheme not in WEIGHTING_SCHEMES:
            raise UsageError(f"`weighting_scheme={self.weighting_scheme!r}` must be one of {WEIGHTING_SCHEMES}.")
        if self.shift <= 0 or self.logit_std <= 0:
            raise UsageError(f"`shift={self.shift}` and `logit_std={self.logit_std}` must be positive.")

    def sample_sigmas(
        self, batch_size: int, device: torch.device | str, sigma_range: tuple[float, float] = (0.0, 1.0)
    ) -> torch.Tensor:
        """Noise levels `(B,)` in `sigma_range` (one expert's share of the noise levels, e.g. Wan 2.2 A14B's)."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        u = compute_density_for_timestep_sampling(
            self.weighting_scheme,
            batch_size,
            logit_mean=self.logit_mean,
            logit_std=self.logit_std,
            mode_scale=self.mode_scale,
            device=device,
        )
        sigmas = self.shift * u / (1 + (self.shift - 1) * u)
        low, high = sigma_range
        return (low + (high - low) * sigmas).clamp(SIGMA_FLOOR, 1.0)

    def sigmas(
        self,
        batch_size: int,
        device: torch.device | str,
        sigma_range: tuple[float, float] = (0.0, 1.0),
        *,
        timesteps: torch.Tensor | None = None,
        num_train_timesteps: int = 1000,
    ) -> torch.Tensor:
        """A training step's noise levels `(B,)`: drawn by `sample_sigmas`, or `timesteps / num_train_timesteps` (the
        transformer then sees exactly `timesteps`) when `timesteps` `(B,)` are given."""
        if timesteps is None:
            return self.sample_sigmas(batch_size, device, sigma_range)
        sigmas = timesteps.to(device, torch.float32) / num_train_timesteps
        return sigmas.expand(batch_size).clamp(SIGMA_FLOOR, 1.0)

    @staticmethod
    def noisy(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """`x_t = (1 - sigma) x_0 + sigma * noise`, for latents of any layout with the batch first."""
        sigmas = sigmas.view(-1, *[1] * (latents.dim() - 1)).to(latents.dtype)
        return (1 - sigmas) * latents + sigmas * noise

    def loss(
        self,
        prediction: torch.Tensor,
        latents: torch.Tensor,
        noise: torch.Tensor,
        sigmas: torch.Tensor,
        token_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weighted MSE of the predicted velocity against `noise - x_0`, averaged per sample then over the batch;
        with `token_mask` `(B, N)` (tokens `(B, N, C)`), the tokens where it is 1 (first-frame conditioning) are left
        out of the sample's average."""
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        from diffusers_tsa.adapters.first_frame import masked_squared_error

        weights = compute_loss_weighting_for_sd3(self.weighting_scheme, sigmas.float())
        if token_mask is None:
            squared_error = (prediction.float() - (noise - latents).float()).pow(2).flatten(1).mean(1)
        else:
            squared_error = masked_squared_error(prediction, noise - latents, token_mask)
        return (weights * squared_error).mean()
