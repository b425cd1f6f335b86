"""The alignment term of the training objective (paper Eq. 14) and the module that trains with it."""

from __future__ import annotations

import torch
from torch import nn

from ..adapters.base import ModelAdapter
from ..losses import repa_loss, trd_loss, tsa_loss
from ..projector import AlignmentProjector

#: `--alignment_loss` values: the paper's method, its unmasked form, the two baselines, and plain fine-tuning.
ALIGNMENT_LOSSES = ("m-tsa", "tsa", "trd", "repa", "none")


def alignment_loss(
    name: str,
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    motion_mask: torch.Tensor | None = None,
    tau: float = 0.1,
) -> torch.Tensor:
    """The alignment loss `name` between projected student features and teacher features.

    Args:
        name (`str`): one of `ALIGNMENT_LOSSES` except `"none"`.
        student (`torch.Tensor`): `(B, F, H, W, C)` projected diffusion features.
        teacher (`torch.Tensor`): `(B, F, H, W, C)` teacher features.
        motion_mask (`torch.Tensor`, *optional*): `(B, F, H, W)` bool queries, required for `"m-tsa"`.
        tau (`float`, defaults to 0.1): TSA temperature.
    """
    if name == "m-tsa":
        if motion_mask is None:
            raise ValueError("`--alignment_loss m-tsa` needs motion masks.")
        return tsa_loss(student, teacher, tau=tau, query_mask=motion_mask)
    if name == "tsa":
        return tsa_loss(student, teacher, tau=tau)
    if name == "trd":
        return trd_loss(student, teacher)
    if name == "repa":
        return repa_loss(student, teacher)
    raise ValueError(f"Unknown alignment loss {name!r}; choose one of {ALIGNMENT_LOSSES}.")


class AlignedTransformer(nn.Module):
    """The trained modules as one: the transformer and, when aligning, the projector.

    accelerate must prepare one module whose `forward` runs the whole training forward: DeepSpeed wraps a single
    model, and DDP and FSDP synchronise gradients of what their wrapper's `forward` ran. This forward runs the
    adapter's diffusion loss with the alignment block hooked, and projects the captured video tokens.

    Args:
        adapter (`ModelAdapter`): the model family; its `transformer` becomes this module's `transformer`.
        projector (`AlignmentProjector`, *optional*): `None` trains with the diffusion loss alone.
        depth (`int`, *optional*): the block to align (`--alignment_depth`), required with a projector.
    """

    def __init__(self, adapter: ModelAdapter, projector: AlignmentProjector | None = None, depth: int | None = None):
        super().__init__()
        self.transformer = adapter.transformer
        self.projector = projector
        self._adapter = adapter
        self._extractor = adapter.feature_extractor(self.transformer, depth) if projector is not None else None

    def forward(
        self, latents: torch.Tensor, conditioning: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Returns the adapter's diffusion loss terms and the projected student features `(B, F, H, W, C)`
        (`None` without a projector)."""
        if self._extractor is None:
            return self._adapter.diffusion_loss(self.transformer, latents, conditioning), None
        with self._extractor.capture() as captured:
            terms = self._adapter.diffusion_loss(self.transformer, latents, conditioning)
        tokens = self._adapter.alignment_tokens(captured.hidden_states, latents.shape[0])
        return terms, self.projector(tokens)
