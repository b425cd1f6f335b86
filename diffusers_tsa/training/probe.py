"""The alignment probe: is the student's correspondence structure moving toward the teacher's?

At each validation, on one fixed clip at one noise level, the probe measures the agreement of the student's and the
teacher's correspondences (`alignment_agreement`: top-1 agreement and tempered KL, on the loss's queries), and draws
them (paper Fig. 1, 3: one query's maps over the later frames, teacher beside student, at tau = 1 and the run's tau)
with the motion mask that picks M-TSA's queries (paper Fig. 4). The metric needs nothing beyond the core
dependencies; the pictures need matplotlib (`pip install "diffusers-tsa[viz]"`) and are skipped, with one warning,
without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import datasets
import numpy as np
import torch

from ..adapters.adapter import ModelAdapter
from ..data import CAPTION, VIDEO, ClipSpec
from ..data.columns import LATENTS_COLUMN, true_rows
from ..diagnostics import (
    Agreement,
    alignment_agreement,
    correspondence_maps,
    query_tokens,
    salient_queries,
    student_features,
    teacher_frames,
)
from ..errors import UsageError
from ..features.precomputed import precomputed_settings
from ..loss_registry import MTSAOptions
from ..masking import motion_saliency_mask
from ..teachers import TeacherInput
from ..visualize import render_correspondence, render_motion_masks, require_matplotlib, save_png
from .alignment import Alignment
from .data import TrainingClips, collate_examples, floating_to, validity_columns


logger = logging.getLogger(__name__)

#: The probe's noise level: the middle of a 1000-step schedule (flow matching: sigma = 0.5).
PROBE_TIMESTEP = 500
#: The usable rows the probe's clip is read from: the first, and the stand-ins for it should it be unreadable.
PROBE_CANDIDATES = 64
#: The file the probe appends its metric to, one JSON line per probe, in `output_dir/validation/`.
AGREEMENT_FILE = "agreement.jsonl"


@dataclass
class ProbeResult:
    """One probe: its step, the agreement, and the pictures (`name -> (H, W, 3) uint8`) it drew."""

    step: int
    agreement: Agreement
    pictures: dict[str, np.ndarray] = field(default_factory=dict)

    def logs(self) -> dict[str, float]:
        """The scalars for `accelerator.log`."""
        return {"alignment/top1_agreement": self.agreement.top1, "alignment/tempered_kl": self.agreement.kl}


class AlignmentProbe:
    """Measures and draws the alignment of a training run on one fixed clip (see the module docstring).

    Build it with `AlignmentProbe.build`; call it at validation with the step. It runs under `torch.no_grad`, seeds its
    own draws (the VAE sample, the noise) inside a forked RNG, so training draws the same numbers with or without it,
    and computes the teacher's targets once.

    Args:
        alignment (`Alignment`): the run's alignment term (projector, hooked block, teacher targets, loss settings).
        adapter (`ModelAdapter`): the student.
        batch (`dict`): the probe clip as a batch of one (`collate_examples`), with its precomputed columns if any.
        teacher_input (`TeacherInput`): what the teacher sees of the clip (for the pictures and the mask).
        tubelet (`tuple[int, int, int]`): the teacher's `(Pt, Ph, Pw)`.
        timestep (`int`, defaults to `PROBE_TIMESTEP`): the noise level the student sees.
        seed (`int`, defaults to 0): seeds the probe's VAE sample and noise, the same at every probe.
    """

    def __init__(
        self,
        alignment: Alignment,
        adapter: ModelAdapter,
        batch: dict,
        *,
        teacher_input: TeacherInput,
        tubelet: tuple[int, int, int],
        timestep: int = PROBE_TIMESTEP,
        seed: int = 0,
    ):
        self.alignment, self.adapter, self.batch = alignment, adapter, batch
        self.teacher_input, self.tubelet = teacher_input, tuple(tubelet)
        self.timestep, self.seed = timestep, seed
        self.last_step: int | None = None  # the step of the latest probe
        self._targets: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warned_no_pictures = False

    @classmethod
    def build(
        cls,
        alignment: Alignment,
        adapter: ModelAdapter,
        table: datasets.Dataset,
        clip: ClipSpec,
        *,
        video: str | os.PathLike | None = None,
        inputs_columns: Sequence[str] = (),
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> AlignmentProbe:
        """The probe of a run: on `video` (a held-out clip, captioned `""`), or else on the first usable row of the
        training `table` (with its precomputed teacher and model-input columns, when the run uses them), read as
        `clip` (a random crop becomes the center one). The student's inputs (`latent_moments`,
        `text_encoder_outputs`) are the precomputed ones, or computed here once (loading the encoders for it when the
        run trains without them), in `dtype` on `device`.

        Raises:
            `UsageError` (`DatasetError`): when `video` is given while the teacher's targets are precomputed, or no
                row of the table can be read.
        """
        config = alignment.config
        if video is not None and alignment.teacher is None:
            raise UsageError(
                "`video` needs the teacher online: with precomputed teacher features the probe uses the dataset's "
                "first clip (drop the held-out clip, or run the teacher with --teacher_model_name_or_path)."
            )
        if video is not None:
            table = datasets.Dataset.from_dict({CAPTION: [""], VIDEO: [os.fspath(video)]})
        if clip.reshape_mode == "random":
            clip = replace(clip, reshape_mode="center")
        features_column = None if video is not None else config.features_column
        inputs_columns = () if video is not None else inputs_columns
        usable = true_rows(table, *(column for column, _ in validity_columns(table, features_column, inputs_columns)))
        # The first usable row; should it be unreadable, a stand-in among the next ones, as in training.
        head = table.select(usable[:PROBE_CANDIDATES])
        clips = TrainingClips(head, clip, features_column=features_column, inputs_columns=inputs_columns)
        batch = collate_examples([clips[0]])
        if LATENTS_COLUMN not in batch:
            with adapter.encoders_loaded():
                batch[LATENTS_COLUMN] = adapter.latent_moments(batch["videos"])
                batch["text"] = adapter.text_encoder_outputs(batch["captions"])
        batch[LATENTS_COLUMN] = batch[LATENTS_COLUMN].to(device, dtype)
        batch["text"] = floating_to(batch["text"], device, dtype)
        if batch["skipped"]:
            logger.warning(f"The alignment probe skipped unreadable clip(s) {[c for c, _ in batch['skipped']]}.")
        if alignment.teacher is not None:
            teacher_input, tubelet = alignment.teacher.input, alignment.teacher.tubelet
        else:
            settings = precomputed_settings(head, config.features_column)
            teacher_input, tubelet = TeacherInput(**settings["teacher_input"]), tuple(settings["tubelet"])
        batch["videos"] = batch["videos"].to(device)
        return cls(alignment, adapter, batch, teacher_input=teacher_input, tubelet=tubelet, seed=seed)

    def _tsa_setting(self, name: str) -> float:
        """The run's `temperature` or `mask_ratio` where its loss has that option, else M-TSA's default."""
        return getattr(self.alignment.config.options, name, getattr(MTSAOptions, name))

    def _teacher_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's features `(1, F, H, W, C)` and the motion mask `(1, F, H, W)` (from the pixels when the loss
        takes no mask), computed once."""
        if self._targets is None:
            features, mask = self.alignment.targets(self.batch)
            if mask is None:
                frames = teacher_frames(self.batch["videos"], self.teacher_input)
                mask = motion_saliency_mask(frames, tubelet=self.tubelet, ratio=self._tsa_setting("mask_ratio"))
            self._targets = features.float(), mask
        return self._targets

    @torch.no_grad()
    def __call__(self, step: int, *, pictures: bool = True) -> ProbeResult:
        """Runs the student on the probe clip at `self.timestep` and compares its projected features with the
        teacher's: on M-TSA's queries for `m-tsa`, on every token otherwise. Draws the pictures when `pictures` is
        set and matplotlib is installed."""
        features, mask = self._teacher_targets()
        videos = self.batch["videos"]
        with _forked_rngs(self.seed, videos.device):
            student = student_features(
                self.adapter,
                videos,
                depth=self.alignment.config.depth,
                timestep=self.timestep,
                projector=self.alignment.projector,
                moments=self.batch[LATENTS_COLUMN],
                text=self.batch["text"],
            )
        features, mask = features.to(student.device), mask.to(student.device)
        config = self.alignment.config
        agreement = alignment_agreement(
            student, features, tau=self._tsa_setting("temperature"), query_mask=mask if config.masked else None
        )
        result = ProbeResult(step, agreement)
        self.last_step = step
        if pictures and self._can_draw():
            result.pictures = self._pictures(student, features, mask, step)
        return result

    def _can_draw(self) -> bool:
        try:
            require_matplotlib()
            return True
        except ImportError as err:
            if not self._warned_no_pictures:
                logger.warning(f"The alignment probe logs its metric but draws no pictures: {err}")
                self._warned_no_pictures = True
            return False

    def _pictures(
        self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, step: int
    ) -> dict[str, np.ndarray]:
        """The correspondence maps of the most dynamic token of token frame 0 over the later frames, teacher beside
        student at tau = 1 and the run's tau (Fig. 1, 3), titled with the `step`, and the motion mask (Fig. 4), over
        the clip's frames."""
        videos = self.batch["videos"]
        seen = teacher_frames(videos, self.teacher_input)[0]
        shown = teacher_frames(videos, self.teacher_input, size=tuple(videos.shape[-2:]))[0].cpu()
        (query,) = salient_queries(seen.cpu(), self.tubelet, frame=0, k=1)
        temperatures = sorted({1.0, self._tsa_setting("temperature")}, reverse=True)
        index = query_tokens(tuple(teacher.shape[1:4]), [query])
        maps = {
            name: correspondence_maps(grid[0], index, tau=temperatures)[:, 0].cpu()
            for name, grid in (("teacher", teacher), ("student", student))
        }
        return {
            "correspondence": render_correspondence(
                shown, maps, query, temperatures, title=f"Step {step}: correspondences of query token {query}"
            ),
            "motion_mask": render_motion_masks(shown, mask[0].cpu(), [self._tsa_setting("mask_ratio")]),
        }


def write_probe(result: ProbeResult, output_dir: str | os.PathLike) -> list[Path]:
    """Appends the agreement to `output_dir/validation/agreement.jsonl` and writes the pictures there as
    `correspondence-<step>.png` and `motion_mask.png` (the same at every step); returns the written paths."""
    folder = Path(output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    line = {"step": result.step, "top1_agreement": result.agreement.top1, "tempered_kl": result.agreement.kl}
    with open(folder / AGREEMENT_FILE, "a") as file:
        file.write(json.dumps(line) + "\n")
    paths = [folder / AGREEMENT_FILE]
    for name, picture in result.pictures.items():
        file_name = "motion_mask.png" if name == "motion_mask" else f"{name}-{result.step}.png"
        paths.append(save_png(picture, folder / file_name))
    return paths


def read_agreement(output_dir: str | os.PathLike) -> list[dict]:
    """The probes a run wrote (`write_probe`), oldest first: `{"step", "top1_agreement", "tempered_kl"}` each."""
    path = Path(output_dir) / "validation" / AGREEMENT_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def _forked_rngs(seed: int, device: torch.device) -> Iterator[None]:
    """Seeds torch's, numpy's and Python's random generators for the block and puts back their states after it, so
    that a probe draws the same noise each time and changes nothing the training draws next (NOVA's forward draws
    its mask ratio from numpy)."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
