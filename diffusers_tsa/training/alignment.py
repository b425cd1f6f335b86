"""The alignment term of the training objective (paper Eq. 14) and the module that trains with it.

`AlignmentConfig` says what the term is (checked against the student's and the teacher's configs, no weights);
`Alignment` holds what computes it: the projector, the hook on the student's block, the source of the targets (an
online teacher, the precomputed columns that come with each batch, or the student's own deeper block), the loss; its
weight over the run is an `AlignmentWeight`. The training loop then reads, in the shape of diffusers' examples:

    terms, student = model(latents, conditioning)  # model = AlignedTransformer(adapter, alignment)
    loss = sum(terms.values()) + weight.value * alignment.loss(student, batch)  # weight = AlignmentWeight(...)
    ...
    weight.update(alignment_loss)  # after each optimizer step
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.training_utils import cast_training_params
from torch import nn

from ..adapters.adapter import ModelAdapter
from ..errors import GridError, UsageError
from ..features import teacher_targets
from ..hooks import BlockFeatureExtractor
from ..loss_registry import ALIGNMENT_LOSSES, LossOptions, WeightSchedule, get_alignment_loss
from ..masking import motion_saliency_mask
from ..projector import PROJECTOR_HEADS, PROJECTOR_SUBFOLDER, AlignmentProjector, GridResampling
from ..teachers import TeacherGeometry, VideoTeacher, load_teacher


Grid = tuple[int, int, int]


def alignment_loss(
    name: str,
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    motion_mask: torch.Tensor | None = None,
    options: LossOptions | None = None,
) -> torch.Tensor:
    """The registered alignment loss `name` between projected student features and teacher features.

    Args:
        name (`str`): a key of `ALIGNMENT_LOSSES` (`"m-tsa"`, `"tsa"`, `"trd"`, `"repa"`, `"crepa"`, or one added with
            `register_alignment_loss`).
        student (`torch.Tensor`): `(B, F, H, W, C)` projected diffusion features.
        teacher (`torch.Tensor`): `(B, F, H, W, C)` teacher features.
        motion_mask (`torch.Tensor`, *optional*): `(B, F, H, W)` bool queries, required by a masked loss (`"m-tsa"`).
        options (`LossOptions`, *optional*): the loss's options, e.g. `MTSAOptions(temperature=0.1)` or
            `CREPAOptions(crepa_adjacent_distance=2)`; `None` takes their defaults.

    Returns:
        `torch.Tensor`: the scalar loss.

    Raises:
        `UsageError`: for an unknown `name`, options of another loss, or a masked loss without `motion_mask`.
    """
    return get_alignment_loss(name)(student, teacher, options, motion_mask=motion_mask)


@dataclass(frozen=True)
class AlignmentConfig:
    """What the alignment term is, checked against the student's and the teacher's configs.

    Args:
        loss (`str`): a key of `ALIGNMENT_LOSSES`.
        depth (`int`): the student block whose output is aligned, counted from 1.
        student_grid (`tuple[int, int, int]`): the hooked block's token grid (F, H, W).
        student_width (`int`): the hooked block's width.
        teacher_grid (`tuple[int, int, int]`): the teacher's token grid (F, H, W).
        teacher_width (`int`): the teacher's feature width.
        weight (`float`, defaults to 0.5): lambda of Eq. 14 (after any warm-up, before any decay).
        schedule (`WeightSchedule`, *optional*): how lambda changes over the run (`AlignmentWeight`); `None` is
            replaced by a constant one.
        options (`LossOptions`, *optional*): the loss's options, an instance of `ALIGNMENT_LOSSES[loss].options`
            (e.g. `MTSAOptions(temperature=0.1, mask_ratio=0.2)`, `CREPAOptions(crepa_adjacent_distance=2)`); `None`
            is replaced by their defaults.
        projector_hidden_dim (`int`, defaults to 2048): the projector's MLP width.
        projector_head (`str`, defaults to `"mlp"`): the projector's form, one of `PROJECTOR_HEADS`.
        target_depth (`int`, *optional*): align to the output of the student's own block `target_depth` (deeper than
            `depth`, counted from 1, without gradient) instead of a teacher: no teacher, no pixels, the student's
            grid and width (`teacher_grid = student_grid`, `teacher_width = student_width`); M-TSA's queries then
            come from the motion of that block's features.
        teacher (`TeacherGeometry`, *optional*): the teacher to run online; `None` takes the targets from each batch
            (`teacher_features` and `motion_mask`, from the dataset's `features_column`).
        teacher_config (`transformers.PretrainedConfig`, *optional*): the teacher's config, already read.
        features_column (`str`, *optional*): the dataset column of precomputed features.
        features_settings (`dict`, *optional*): the settings recorded with them (`TeacherFeatures.settings`: the
            teacher's name, its `TeacherInput`, the `ClipSpec` of the clips, ...), for the model card.
        drop_first_frame (`bool`, defaults to `True`): whether the teacher skips pixel frame 0 (`TeacherInput`),
            which a causal video VAE encodes alone into latent frame 0: the projector then drops latent frame 0,
            exactly then.

    Raises:
        `UsageError`: for a value out of range or options of another loss (each option is checked by its options
            dataclass), or (`GridError`) a teacher grid the projector cannot reach.
    """

    loss: str
    depth: int
    student_grid: Grid
    student_width: int
    teacher_grid: Grid
    teacher_width: int
    weight: float = 0.5
    schedule: WeightSchedule | None = None
    options: LossOptions | None = None
    projector_hidden_dim: int = 2048
    projector_head: str = "mlp"
    target_depth: int | None = None
    teacher: TeacherGeometry | None = None
    teacher_config: Any = field(default=None, compare=False, repr=False)
    features_column: str | None = None
    features_settings: dict | None = field(default=None, compare=False, repr=False)
    drop_first_frame: bool = True

    def __post_init__(self):
        bad = []
        entry = ALIGNMENT_LOSSES.get(self.loss)
        if entry is None:
            bad.append(f"`loss={self.loss!r}` must be one of {tuple(ALIGNMENT_LOSSES)}")
        elif self.options is None:
            object.__setattr__(self, "options", entry.options())
        elif type(self.options) is not entry.options:
            bad.append(f"`options={self.options!r}` must be `{entry.options.__name__}` for `loss={self.loss!r}`")
        if self.weight < 0:
            bad.append(f"`weight={self.weight}` must be >= 0")
        if self.projector_hidden_dim < 1:
            bad.append(f"`projector_hidden_dim={self.projector_hidden_dim}` must be >= 1")
        if self.projector_head not in PROJECTOR_HEADS:
            bad.append(f"`projector_head={self.projector_head!r}` must be one of {PROJECTOR_HEADS}")
        if self.schedule is None:
            object.__setattr__(self, "schedule", WeightSchedule())
        if self.target_depth is not None:
            if self.target_depth <= self.depth:
                bad.append(f"`target_depth={self.target_depth}` must be deeper than `depth={self.depth}`")
            if self.teacher is not None or self.features_column is not None:
                bad.append(f"`target_depth={self.target_depth}` aligns to the student: it takes no teacher")
            if (tuple(self.teacher_grid), self.teacher_width) != (tuple(self.student_grid), self.student_width):
                bad.append(f"`target_depth={self.target_depth}` has the student's grid and width as its targets'")
        pooled = self.teacher is not None and self.teacher.input.frame_pooling > 1
        if pooled and entry is not None and entry.masked:
            bad.append(
                f"`loss={self.loss!r}` computes motion masks on the teacher's frames, which "
                f"`TeacherInput.frame_pooling={self.teacher.input.frame_pooling}` averages; use another loss"
            )
        if bad:
            raise UsageError("Invalid alignment settings: " + "; ".join(bad) + ".")
        try:
            GridResampling.between(self.student_grid, self.teacher_grid, drop_first_frame=self.drop_first_frame)
        except GridError as err:
            raise GridError(f"The projector cannot reach the teacher grid: {err}{self._frames_hint()}") from None

    def _frames_hint(self) -> str:
        """The teacher frame counts nearest to the given one that pair with the student's latent frames."""
        student = self.student_grid[0] - self.drop_first_frame
        if self.teacher is None or student < 1 or GridResampling.pairs(student, self.teacher_grid[0]):
            return ""
        tubelet, given = self.teacher.tubelet_size, self.teacher.input.num_frames
        grids = {student * k for k in (1, 2, 3, 4)} | {student // k for k in range(1, student + 1) if student % k == 0}
        nearest = sorted(sorted(f * tubelet for f in grids), key=lambda n: abs(n - given))[:2]
        skipped = " after the first" if self.drop_first_frame else ""
        return (
            f" The student has {student} latent frames{skipped}: `TeacherInput.num_frames` "
            f"{' or '.join(map(str, sorted(nearest)))} pairs each teacher tubelet with them."
        )

    @property
    def masked(self) -> bool:
        """Whether the loss takes M-TSA's motion-saliency queries (its options then have their `mask_ratio`)."""
        return ALIGNMENT_LOSSES[self.loss].masked


class Alignment:
    """The alignment term of Eq. 14: `loss(h(student block output), targets)`, weighted by an `AlignmentWeight`.

    Build it with `Alignment.build`; `AlignedTransformer` runs the hooked forward and the projector, `loss` computes
    the term from the projected features and the batch.

    Args:
        config (`AlignmentConfig`): what the term is.
        projector (`AlignmentProjector`): h, trained with the student.
        extractor (`BlockFeatureExtractor`): the hook on the student's block `config.depth`.
        teacher (`VideoTeacher`, *optional*): the online teacher; `None` reads precomputed targets from each batch.
        target_extractor (`BlockFeatureExtractor`, *optional*): the hook on the student's block
            `config.target_depth`, exactly when the config has one: its output, detached, is the target.
    """

    def __init__(
        self,
        config: AlignmentConfig,
        projector: AlignmentProjector,
        extractor: BlockFeatureExtractor,
        teacher: VideoTeacher | None = None,
        target_extractor: BlockFeatureExtractor | None = None,
    ):
        if (teacher is None) != (config.teacher is None):
            raise UsageError("Pass an online `teacher` exactly when `AlignmentConfig.teacher` names one.")
        if (target_extractor is None) != (config.target_depth is None):
            raise UsageError("Pass a `target_extractor` exactly when `AlignmentConfig.target_depth` names a block.")
        self.config, self.projector, self.extractor, self.teacher = config, projector, extractor, teacher
        self.target_extractor = target_extractor
        #: The student's own target `(B, F, H, W, C)` of the last forward (`AlignedTransformer`), detached.
        self.student_target: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        config: AlignmentConfig,
        adapter: ModelAdapter,
        *,
        device: torch.device | str = "cpu",
        teacher_dtype: torch.dtype = torch.float32,
        trust_remote_code: bool = False,
        teacher_revision: str | None = None,
        cache_dir: str | None = None,
    ) -> Alignment:
        """Loads the online teacher (if any), creates the projector and hooks the adapter's transformer.

        Args:
            config (`AlignmentConfig`): what the term is.
            adapter (`ModelAdapter`): the student; its `transformer` is hooked at `config.depth`.
            device (`torch.device` or `str`, defaults to `"cpu"`): where the projector and the teacher go.
            teacher_dtype (`torch.dtype`, defaults to `torch.float32`): dtype the teacher runs in.
            trust_remote_code (`bool`, defaults to `False`): allow the teacher checkpoint's own code to run.
            teacher_revision (`str`, *optional*): Hub revision of the teacher.
            cache_dir (`str`, *optional*): Hub cache folder.
        """
        teacher = None
        if config.teacher is not None:
            teacher = load_teacher(
                config.teacher.name,
                config.teacher.input,
                config=config.teacher_config,
                dtype=teacher_dtype,
                device=device,
                trust_remote_code=trust_remote_code,
                revision=teacher_revision,
                cache_dir=cache_dir,
            )
        projector = AlignmentProjector(
            config.student_width,
            config.teacher_width,
            student_grid=config.student_grid,
            teacher_grid=config.teacher_grid,
            hidden_dim=config.projector_hidden_dim,
            drop_first_frame=config.drop_first_frame,
            head=config.projector_head,
        ).to(device)
        extractor = adapter.feature_extractor(adapter.transformer, config.depth)
        target_extractor = None
        if config.target_depth is not None:
            target_extractor = adapter.feature_extractor(adapter.transformer, config.target_depth)
        return cls(config, projector, extractor, teacher, target_extractor)

    def targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Target features `(B, F, H, W, C)` and M-TSA queries `(B, F, H, W)` (or `None`) of a training batch:
        computed by the online teacher from `batch["videos"]`, read from the precomputed `batch` columns, or the
        student's own block of the last forward (`student_target`; its queries from the motion of its features)."""
        mask_ratio = self.config.options.mask_ratio if self.config.masked else None
        if self.target_extractor is not None:
            if self.student_target is None:
                raise UsageError("`target_depth`: run the `AlignedTransformer` forward before asking for its targets.")
            target = self.student_target
            if mask_ratio is None:
                return target, None
            frames = target.float().permute(0, 1, 4, 2, 3)  # (B, F, C, H, W): one token is one tubelet
            return target, motion_saliency_mask(frames, tubelet=(1, 1, 1), ratio=mask_ratio)
        if self.teacher is None:
            return batch["teacher_features"], batch.get("motion_mask")
        return teacher_targets(self.teacher, batch["videos"], mask_ratio)

    def loss(self, student: torch.Tensor, batch: dict) -> torch.Tensor:
        """The unweighted alignment loss of projected student features `(B, F, H, W, C)` against the batch's targets."""
        with torch.no_grad():
            features, mask = self.targets(batch)
        features = features.to(student.device, torch.float32)  # stored features come in their 2-byte dtype
        mask = None if mask is None else mask.to(student.device)
        return alignment_loss(self.config.loss, student, features, motion_mask=mask, options=self.config.options)

    def save_projector(self, output_dir: str | os.PathLike) -> None:
        """Writes the projector to `output_dir/alignment_projector` (beside, never inside, the transformer weights)."""
        self.projector.save_pretrained(Path(output_dir) / PROJECTOR_SUBFOLDER)

    def load_projector(self, input_dir: str | os.PathLike) -> None:
        """Loads what `save_projector` wrote into the live projector, refusing one made for other grids or widths."""
        folder = Path(input_dir) / PROJECTOR_SUBFOLDER
        if not (folder / "config.json").is_file():
            raise UsageError(f"{input_dir} has no projector ({PROJECTOR_SUBFOLDER}/); is it a checkpoint of this run?")
        saved = AlignmentProjector.from_pretrained(folder)
        keys = ("in_dim", "out_dim", "student_grid", "teacher_grid", "hidden_dim", "head")
        differ = [k for k in keys if list(_as_list(saved.config[k])) != list(_as_list(self.projector.config[k]))]
        if differ:
            raise UsageError(
                f"The projector in {folder} was made for "
                + ", ".join(f"{k}={saved.config[k]}" for k in differ)
                + ", this run needs "
                + ", ".join(f"{k}={self.projector.config[k]}" for k in differ)
                + "; resume with the settings of the run that saved it."
            )
        self.projector.load_state_dict(saved.state_dict())


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class AlignedTransformer(nn.Module):
    """The trained modules as one: the transformer and, when aligning, the projector.

    accelerate must prepare one module whose `forward` runs the whole training forward: DeepSpeed wraps a single
    model, and DDP and FSDP synchronise gradients of what their wrapper's `forward` ran. This forward runs the
    adapter's diffusion loss with the alignment block hooked, and projects the captured video tokens.

    Args:
        adapter (`ModelAdapter`): the model family; its `transformer` becomes this module's `transformer`.
        alignment (`Alignment`, *optional*): `None` trains with the diffusion loss alone.
    """

    def __init__(self, adapter: ModelAdapter, alignment: Alignment | None = None):
        super().__init__()
        self.transformer = adapter.transformer
        self.projector = alignment.projector if alignment is not None else None
        self._adapter = adapter
        self._alignment = alignment
        self._extractor = alignment.extractor if alignment is not None else None

    def parameter_groups(
        self, learning_rate: float, projector_learning_rate: float | None = None
    ) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: the transformer's trainable weights at `learning_rate`, and the
        projector's at `projector_learning_rate` (default: `learning_rate`)."""
        groups = [{"params": [p for p in self.transformer.parameters() if p.requires_grad], "lr": learning_rate}]
        if self.projector is not None:
            lr = learning_rate if projector_learning_rate is None else projector_learning_rate
            groups.append({"params": list(self.projector.parameters()), "lr": lr})
        return groups

    def save_trained(self, output_dir: str | os.PathLike) -> None:
        """Writes what trains in its stock format, the LoRA or the full transformer (`ModelAdapter.save_trained`), and
        the projector beside it (`Alignment.save_projector`)."""
        self._adapter.save_trained(output_dir, self.transformer)
        if self._alignment is not None:
            self._alignment.save_projector(output_dir)

    def load_trained(self, input_dir: str | os.PathLike) -> None:
        """Loads what `save_trained` wrote (resuming a checkpoint) into the live modules; the transformer's trainable
        weights stay in float32, as they train."""
        self._adapter.load_trained(input_dir, self.transformer)
        if self._alignment is not None:
            self._alignment.load_projector(input_dir)
        cast_training_params([self.transformer], dtype=torch.float32)

    def forward(
        self, latents: torch.Tensor, conditioning: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Returns the adapter's diffusion loss terms and the projected student features `(B, F, H, W, C)`
        (`None` without alignment). With a `target_depth`, that block's output, detached, on the student's grid,
        becomes the alignment's `student_target`."""
        if self._extractor is None:
            return self._adapter.diffusion_loss(self.transformer, latents, conditioning), None
        target = self._alignment.target_extractor
        with self._extractor.capture() as captured, contextlib.ExitStack() as stack:
            deeper = stack.enter_context(target.capture()) if target is not None else None
            terms = self._adapter.diffusion_loss(self.transformer, latents, conditioning)
        batch_size = latents.shape[0]
        if deeper is not None:
            f, h, w = self._alignment.config.student_grid
            tokens = self._adapter.alignment_tokens(deeper.hidden_states, batch_size).detach()
            self._alignment.student_target = tokens.reshape(batch_size, f, h, w, -1)
        tokens = self._adapter.alignment_tokens(captured.hidden_states, batch_size)
        return terms, self.projector(tokens)
