"""Training the student (the base, then each arm's fine-tune) with the library's `Alignment`, measuring its held-out
agreement with the teacher, and generating clips."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from diffusers_tsa.adapters import ADAPTERS, TrainingOptions, load_spec
from diffusers_tsa.diagnostics import alignment_agreement, student_features
from diffusers_tsa.features import teacher_targets
from diffusers_tsa.loss_registry import MTSAOptions
from diffusers_tsa.training import AlignedTransformer, Alignment, AlignmentConfig

from .models import DEPTH
from .scene import HEIGHT, NUM_FRAMES, WIDTH


#: The arms: no alignment, then each alignment loss of the library at its defaults with the trained teacher, then
#: M-TSA with the oracle teacher (`models.OracleTeacher`), the upper bound.
ARMS = ("none", "m-tsa", "tsa", "trd", "repa", "crepa", "m-tsa-oracle")
#: The arm that aligns to the oracle teacher, and its loss.
ORACLE_ARM, ORACLE_LOSS = "m-tsa-oracle", "m-tsa"
#: Text length of the captions (they have 16 words at most).
MAX_SEQUENCE_LENGTH = 16
#: The probe's noise level (flow matching sigma = 0.5), temperature and M-TSA query share.
PROBE_TIMESTEP, PROBE_TAU, PROBE_MASK_RATIO = 500, MTSAOptions.temperature, MTSAOptions.mask_ratio


@dataclass
class ClipSet:
    """Clips with everything the frozen models give for them, computed once: the VAE posterior, the prompts' text
    encoder outputs, the teacher's features and M-TSA's motion masks."""

    videos: torch.Tensor  # (B, T, 3, H, W) in [-1, 1]
    captions: list[str]
    moments: torch.Tensor  # (B, 2C, F, h, w)
    text: dict[str, torch.Tensor]
    teacher_features: torch.Tensor  # (B, F, H, W, C)
    motion_mask: torch.Tensor  # (B, F, H, W) bool

    @classmethod
    def encode(cls, adapter, teacher, videos: torch.Tensor, captions: list[str]) -> ClipSet:
        with torch.no_grad():
            features, mask = teacher_targets(teacher, videos, PROBE_MASK_RATIO)
            return cls(
                videos,
                captions,
                adapter.latent_moments(videos),
                adapter.text_encoder_outputs(captions),
                features.float(),
                mask,
            )

    def with_teacher(self, teacher) -> ClipSet:
        """The same clips with another teacher's features and motion masks (the VAE and text encoder not run again)."""
        with torch.no_grad():
            features, mask = teacher_targets(teacher, self.videos, PROBE_MASK_RATIO)
        return replace(self, teacher_features=features.float(), motion_mask=mask)

    def rows(self, index: torch.Tensor) -> dict:
        return {
            "moments": self.moments[index],
            "text": {k: v[index] for k, v in self.text.items()},
            "teacher_features": self.teacher_features[index],
            "motion_mask": self.motion_mask[index],
        }


def load_student(checkpoint: Path):
    """The student's `ModelAdapter` (LTX-Video family) with its whole transformer trained."""
    spec = load_spec(str(checkpoint))
    adapter = ADAPTERS[spec.family].from_pretrained(
        spec, options=TrainingOptions(max_sequence_length=MAX_SEQUENCE_LENGTH)
    )
    adapter.enable_full_training()
    return adapter


def alignment_config(loss: str, adapter, teacher, *, weight: float) -> AlignmentConfig:
    """The alignment term of an arm, on the precomputed teacher targets."""
    return AlignmentConfig(
        loss=loss,
        depth=DEPTH,
        student_grid=adapter.spec.token_grid(NUM_FRAMES, HEIGHT, WIDTH),
        student_width=adapter.spec.hidden_size,
        teacher_grid=teacher.grid,
        teacher_width=teacher.hidden_size,
        weight=weight,
        projector_hidden_dim=64,
        features_column="teacher_features",
    )


def train(
    adapter,
    clips: ClipSet,
    *,
    loss: str,
    teacher,
    steps: int,
    lr: float,
    batch_size: int,
    data_seed: int,
    seed: int,
    weight: float = 0.5,
) -> tuple[list[float], Alignment | None]:
    """Trains `adapter.transformer` in place for `steps` AdamW steps on `clips`, with the diffusion loss and, unless
    `loss == "none"`, `weight` times the alignment loss `loss` through a new projector. The batches are drawn by
    `data_seed` (the same for every arm), the noise, the noise levels and the projector by `seed`. Returns the
    alignment loss of each step (empty without alignment) and the alignment term (its hook removed), or `None`."""
    alignment = None
    if loss != "none":
        alignment = Alignment.build(alignment_config(loss, adapter, teacher, weight=weight), adapter)
    torch.manual_seed(seed)
    if alignment is not None:
        alignment.projector.apply(_reset(seed))
    model = AlignedTransformer(adapter, alignment)
    optimizer = torch.optim.AdamW(model.parameter_groups(lr), weight_decay=0.0)
    order = torch.Generator().manual_seed(data_seed)
    model.train()
    history = []
    try:
        for _ in range(steps):
            index = torch.randperm(len(clips.captions), generator=order)[:batch_size]
            batch = clips.rows(index)
            if alignment is None or not alignment.config.masked:
                batch.pop("motion_mask")
            latents = adapter.sample_latents(batch["moments"])
            terms, student = model(latents, adapter.conditioning(batch["text"]))
            total = sum(terms.values())
            if alignment is not None:
                term = alignment.loss(student, batch)
                total = total + weight * term
                history.append(float(term.detach()))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
    finally:
        if alignment is not None:
            alignment.extractor.remove()
    adapter.transformer.eval()
    return history, alignment


def _reset(seed: int):
    """Re-initialises a projector's layers from `seed` (the same projector for every arm at one seed)."""
    generator = torch.Generator().manual_seed(seed)

    def reset(module):
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d)):
            bound = 1.0 / module.weight[0].numel() ** 0.5
            with torch.no_grad():
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)

    return reset


def agreement(adapter, teacher, clips: ClipSet, *, seed: int = 0, projector=None) -> tuple[float, float]:
    """Top-1 agreement and tempered KL (tau 0.1) of the student's correspondences with the teacher's on `clips`, at
    the probe's noise level, on M-TSA's motion queries. Without `projector`, the student's own block tokens are
    compared, brought to the teacher grid without a learned weight (`student_features` without a projector): the
    same measure for every arm, with or without a projector; with one, its projection (the training probe's
    measure)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        student = student_features(
            adapter,
            clips.videos,
            depth=DEPTH,
            timestep=PROBE_TIMESTEP,
            teacher_grid=teacher.grid,
            projector=projector,
            moments=clips.moments,
            text=clips.text,
        )
    finally:
        torch.random.set_rng_state(generator_state)
    result = alignment_agreement(student, clips.teacher_features, tau=PROBE_TAU, query_mask=clips.motion_mask)
    return result.top1, result.kl


@torch.no_grad()
def generate(adapter, captions: list[str], *, seed: int, steps: int) -> torch.Tensor:
    """Clips of `captions` from the student's `LTXPipeline` (no guidance): `(B, T, 3, H, W)` in [-1, 1]."""
    pipe = adapter.pipeline(adapter.transformer)
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(
        captions,
        num_frames=NUM_FRAMES,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=steps,
        guidance_scale=1.0,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
    ).frames  # (B, T, 3, H, W) in [0, 1]
    return frames.float().mul(2.0).sub(1.0)


def snapshot(adapter) -> dict[str, torch.Tensor]:
    """The transformer's weights, to start each arm from the same base."""
    return copy.deepcopy(adapter.transformer.state_dict())
