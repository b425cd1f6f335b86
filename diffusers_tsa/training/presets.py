"""Alignment presets: the baselines configured as their authors run them, and the paper's M-TSA.

A preset is a named set of training-flag values (by their `argparse` destinations). `--alignment_preset` makes them
the flags' defaults, so that each flag given on the command line wins (`diffusers_tsa.cli.parse_with_preset`); the
run prints the preset at start-up and writes it on the model card. The teacher checkpoint is not part of a preset
(a run may read precomputed features): each preset names the one its authors use, to pass with
`--teacher_model_name_or_path`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import UsageError


@dataclass(frozen=True)
class AlignmentPreset:
    """A named set of flag values.

    Args:
        name (`str`): what `--alignment_preset` calls it.
        description (`str`): what it reproduces, and how it still differs from its source.
        values (`Mapping[str, Any]`): flag destination (`alignment_loss`, `teacher_height`, ...) -> value.
        teacher (`str`): the teacher checkpoint its authors align with (a transformers name).
        source (`str`): the upstream file and commit its values come from.
    """

    name: str
    description: str
    values: Mapping[str, Any]
    teacher: str
    source: str

    def overridden(self, args: argparse.Namespace) -> dict[str, Any]:
        """The preset's values that the parsed flags `args` set otherwise (given on the command line), by
        destination."""
        return {dest: getattr(args, dest) for dest, value in self.values.items() if getattr(args, dest) != value}

    def summary(self, args: argparse.Namespace | None = None) -> str:
        """One line for the start-up log: `name: --flag value, ...`, with the flags `args` override."""
        values = ", ".join(f"--{dest} {value}" for dest, value in self.values.items())
        line = f"{self.name} ({self.source}): {values}; teacher {self.teacher}"
        overridden = self.overridden(args) if args is not None else {}
        if overridden:
            line += "; overridden: " + ", ".join(f"--{dest} {value}" for dest, value in overridden.items())
        return line


_SIMPLETUNER = "bghira/SimpleTuner@bc8e6ab7738ce457a2ed8eb2d26cadd91c6442cb"
_VIDEOMAEV2 = "videomaev2-base (converted from OpenGVLab/VideoMAE2's vit_b_k710_dl_from_giant.pth)"
_VIDEOREPA = "aHapBean/VideoREPA@80026871659c262df12285fff3a2fb7ae696229e"

#: Preset name -> preset.
ALIGNMENT_PRESETS: dict[str, AlignmentPreset] = {
    preset.name: preset
    for preset in (
        AlignmentPreset(
            "crepa-simpletuner",
            "CREPA as SimpleTuner runs it: each frame squashed to 518x518 for DINOv2 ViT-g/14 (37x37 tokens), one "
            "pixel frame per latent frame (frame 0 included), a LayerNorm + Linear projector on 0-based block 8, "
            "lambda 0.5, one neighbour at tau 1. SimpleTuner decodes the latents to get the frames; this reads them "
            "from the clip.",
            {
                "alignment_loss": "crepa",
                "alignment_depth": 9,
                "alignment_weight": 0.5,
                "crepa_adjacent_distance": 1,
                "crepa_temporal_decay": 1.0,
                "crepa_cumulative_neighbors": False,
                "teacher_height": 518,
                "teacher_width": 518,
                "teacher_frames": "latent",
                "projector_head": "layernorm_linear",
            },
            teacher="facebook/dinov2-giant",
            source=f"{_SIMPLETUNER}:simpletuner/helpers/training/crepa.py, "
            "simpletuner/simpletuner_sdk/server/services/field_registry/sections/loss.py",
        ),
        AlignmentPreset(
            "repa-videorepa",
            "REPA on DINOv2 as VideoREPA runs it: every frame at 420x630 for DINOv2 ViT-B/14 (the student's 30x45 "
            "grid), frame 0 alone and the others averaged in fours (13 targets), VideoREPA's MLP projector (width "
            "2048) on block 18, lambda 0.5.",
            {
                "alignment_loss": "repa",
                "alignment_depth": 18,
                "alignment_weight": 0.5,
                "projector_hidden_dim": 2048,
                "projector_head": "mlp",
                "teacher_height": 420,
                "teacher_width": 630,
                "teacher_frames": "pooled",
            },
            teacher="facebook/dinov2-base",
            source=f"{_VIDEOREPA}:finetune/models/cogvideox_t2v_align/lora_trainer.py, "
            "finetune/scripts/multigpu_VideoREPA_2B_sft.sh",
        ),
        AlignmentPreset(
            "trd-videorepa",
            "VideoREPA's token relation distillation: VideoMAEv2 on the frames after the first at a third of the "
            "size (48 x 160x240 of 49 x 480x720), the MLP projector (width 2048) on block 18, lambda 0.5, margin "
            "0.1 (`trd_loss`'s).",
            {
                "alignment_loss": "trd",
                "alignment_depth": 18,
                "alignment_weight": 0.5,
                "projector_hidden_dim": 2048,
                "projector_head": "mlp",
                "teacher_frames": "uniform",
            },
            teacher=_VIDEOMAEV2,
            source=f"{_VIDEOREPA}:finetune/scripts/multigpu_VideoREPA_2B_sft.sh, "
            "finetune/models/cogvideox_t2v_align/lora_trainer.py",
        ),
        AlignmentPreset(
            "m-tsa-paper",
            "The paper's M-TSA: tau 0.1, motion-salient queries (a share of 0.2), lambda 0.5, the MLP projector (width 2048) on "
            "the family's block, VideoMAEv2 on the frames after the first at a third of the size.",
            {
                "alignment_loss": "m-tsa",
                "alignment_weight": 0.5,
                "tsa_temperature": 0.1,
                "tsa_mask_ratio": 0.2,
                "projector_hidden_dim": 2048,
                "projector_head": "mlp",
                "teacher_frames": "uniform",
            },
            teacher=_VIDEOMAEV2,
            source="the paper (Eq. 8, 12, 14; Sec. 5)",
        ),
    )
}


def get_preset(name: str) -> AlignmentPreset:
    """The preset `name`.

    Raises:
        `UsageError`: for an unknown name.
    """
    if name not in ALIGNMENT_PRESETS:
        raise UsageError(f"`preset={name!r}` is not an alignment preset; choose one of {tuple(ALIGNMENT_PRESETS)}.")
    return ALIGNMENT_PRESETS[name]
