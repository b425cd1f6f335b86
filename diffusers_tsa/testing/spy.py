"""A transformer wrapper for tests that looks at what a family's `diffusion_loss` gives the transformer."""

from __future__ import annotations

import torch
from torch import nn


class TransformerSpy(nn.Module):
    """Runs `transformer`, recording each call's keyword inputs in `inputs`.

    Args:
        transformer (`nn.Module`): the family's transformer (its `config` is the spy's).
        leaf_predictions (`bool`, defaults to `False`): return each prediction detached as a leaf that requires grad,
            recorded in `predictions`: the loss's gradient with respect to the prediction, per latent, lands in its
            `.grad`.
    """

    def __init__(self, transformer: nn.Module, *, leaf_predictions: bool = False):
        super().__init__()
        self.transformer, self.leaf_predictions = transformer, leaf_predictions
        self.inputs: list[dict] = []
        self.predictions: list[torch.Tensor] = []

    @property
    def config(self):
        return self.transformer.config

    def forward(self, **kwargs):
        self.inputs.append(kwargs)
        if not self.leaf_predictions:
            return self.transformer(**kwargs)
        prediction = self.transformer(**kwargs)[0].detach().requires_grad_()
        self.predictions.append(prediction)
        return (prediction,)


def image_to_video_step(model, videos: torch.Tensor) -> tuple[dict, object, torch.Tensor]:
    """One `diffusion_loss` of an image-to-video batch through a `TransformerSpy`: `videos` `(B, T, C, H, W)` in
    [-1, 1] conditioned on their first frames, captioned `"a"`, `"b"`, ...

    Returns:
        `tuple`: the transformer's keyword inputs, the conditioning and the diffusion loss.
    """
    with model.encoders_loaded():
        prompts = [chr(ord("a") + i) for i in range(videos.shape[0])]
        outputs = {**model.text_encoder_outputs(prompts), **model.image_encoder_outputs(videos[:, 0], videos)}
        latents = model.encode_videos(videos)
    spy, conditioning = TransformerSpy(model.transformer), model.conditioning(outputs)
    loss = model.diffusion_loss(spy, latents, conditioning)["diffusion"]
    ((inputs),) = spy.inputs
    return inputs, conditioning, loss
