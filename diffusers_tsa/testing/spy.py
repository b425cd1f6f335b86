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
