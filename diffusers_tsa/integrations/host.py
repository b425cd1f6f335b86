"""The alignment term in a training loop that is not ours: diffusers' examples, finetrainers, SimpleTuner.

`HostAlignment` attaches itself to the host's transformer: the projector becomes one of its submodules (so the host's
optimizer groups, `accelerator.prepare`, gradient accumulation and clipping, DDP and FSDP see it without knowing), the
projector runs inside the transformer's forward (where DDP and FSDP expect every trained weight to run), and the
transformer's `state_dict` leaves it out (so `save_pretrained`, `get_peft_model_state_dict` and the host's own
checkpoints stay stock); `register_accelerate_hooks` saves and loads it beside the host's checkpoints. The host then
adds one term to its loss:

    loss = loss + alignment.weight * alignment.loss(latents=model_input)  # or videos=..., or batch=...
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from typing import Any

import datasets
import torch
from torch import nn

from ..adapters import ADAPTERS
from ..adapters.adapter import ModelAdapter
from ..data import ClipSpec
from ..data.columns import FEATURES_COLUMN
from ..errors import ModelLayoutError, UsageError
from ..features.precomputed import check_precomputed_settings, precomputed_settings
from ..hooks import CapturedFeatures, unwrap_model
from ..loss_registry import ALIGNMENT_LOSSES, LossOptions
from ..teachers import TeacherInput, teacher_config, teacher_geometry
from ..training.alignment import Alignment, AlignmentConfig
from ..training.plan import loss_options
from .student import student_spec


logger = logging.getLogger(__name__)

#: The transformer attribute the projector is attached under (SimpleTuner attaches its CREPA projector the same way).
PROJECTOR_ATTRIBUTE = "alignment_projector"


class HostAlignment:
    """An `Alignment` attached to a host loop's transformer (see the module's docstring).

    Build it with `attach` (Python) or `from_args` (the flags of `diffusers_tsa.cli.add_alignment_arguments(parser,
    own_loop=False)`). Each training forward of the transformer (in training mode, with gradients) records the hooked
    block and projects it; `loss` then computes the term against the teacher targets of the same clips.

    Args:
        alignment (`Alignment`): the term; its extractor hooks `adapter.transformer`.
        adapter (`ModelAdapter`): the family's view of the host's components (the transformer, and the VAE to decode
            latents with).
        decoder (`torch.nn.Module`, *optional*): a lighter decoder of the VAE's latents for `loss(latents=...)`.
    """

    def __init__(self, alignment: Alignment, adapter: ModelAdapter, *, decoder: nn.Module | None = None):
        transformer = unwrap_model(adapter.transformer)
        if hasattr(transformer, PROJECTOR_ATTRIBUTE):
            raise UsageError(f"`transformer` already has an `{PROJECTOR_ATTRIBUTE}`: attach one alignment to it.")
        self.alignment, self.adapter, self.decoder = alignment, adapter, decoder
        transformer.add_module(PROJECTOR_ATTRIBUTE, alignment.projector)
        self._handles = [
            transformer.register_forward_pre_hook(self._start),
            transformer.register_forward_hook(self._finish),
            transformer.register_state_dict_post_hook(_without_projector),
            transformer.register_load_state_dict_post_hook(_projector_not_missing),
        ]
        self._captured: CapturedFeatures | None = None
        #: The projected student features `(B, F, H, W, C)` of the last training forward, until `loss` uses them.
        self.student: torch.Tensor | None = None
        #: The last alignment loss, detached (for logs).
        self.last_loss: torch.Tensor | None = None

    @classmethod
    def attach(
        cls,
        transformer: nn.Module,
        *,
        teacher: str | os.PathLike | datasets.Dataset,
        num_frames: int,
        height: int,
        width: int,
        depth: int | None = None,
        loss: str = "m-tsa",
        weight: float = 0.5,
        options: LossOptions | None = None,
        projector_hidden_dim: int = 2048,
        teacher_input: dict[str, int] | None = None,
        vae: nn.Module | None = None,
        scheduler: Any = None,
        decoder: nn.Module | None = None,
        device: torch.device | str = "cpu",
        teacher_dtype: torch.dtype = torch.float32,
        trust_remote_code: bool = False,
        teacher_revision: str | None = None,
        cache_dir: str | None = None,
        features_column: str = FEATURES_COLUMN,
    ) -> HostAlignment:
        """Checks the settings against the transformer's, the VAE's and the teacher's configs, loads the teacher,
        creates the projector and attaches them to `transformer`.

        Args:
            transformer (`torch.nn.Module`): the host's diffusers transformer (LoRA already added or not).
            teacher (`str`, `os.PathLike` or `datasets.Dataset`): the teacher to run online (see `load_teacher`), or
                a table precomputed by `python -m diffusers_tsa.features` whose rows the host's batches carry
                (`teacher_features`, `motion_mask`): its settings give the teacher grid and are checked.
            num_frames (`int`), height (`int`), width (`int`): the training clips' size in pixels.
            depth (`int`, *optional*): the hooked block, counted from 1; default: the family's.
            loss (`str`, defaults to `"m-tsa"`): a key of `ALIGNMENT_LOSSES`.
            weight (`float`, defaults to 0.5): lambda of Eq. 14.
            options (`LossOptions`, *optional*): the loss's options (its defaults for `None`).
            projector_hidden_dim (`int`, defaults to 2048): the projector's MLP width.
            teacher_input (`dict`, *optional*): `num_frames`, `height`, `width` the teacher sees, overriding the
                paper's rule on the teacher's patch grid (`TeacherInput.for_teacher`).
            vae (`torch.nn.Module`, *optional*): the VAE: its config gives the compression, and `loss(latents=...)`
                decodes with it.
            scheduler (*optional*): the host's noise scheduler (unused by the term; kept on the family's adapter).
            decoder (`torch.nn.Module`, *optional*): a lighter decoder for `loss(latents=...)`.
            device (`torch.device` or `str`, defaults to `"cpu"`): where the projector and the teacher go.
            teacher_dtype (`torch.dtype`, defaults to `torch.float32`): dtype the teacher runs in.
            trust_remote_code (`bool`, defaults to `False`), teacher_revision (`str`, *optional*), cache_dir (`str`,
                *optional*): how the teacher checkpoint is read.
            features_column (`str`, defaults to `"teacher_features"`): the precomputed table's features column.

        Raises:
            `UsageError`: for settings the models cannot take (the depth, the clip size, a teacher grid the projector
                cannot reach, precomputed features made with other settings), each naming the argument.
        """
        spec = student_spec(transformer, vae)
        spec.check_clip(num_frames, height, width)
        depth = spec.default_depth if depth is None else depth
        spec.check_depth(depth)
        if loss not in ALIGNMENT_LOSSES:
            raise UsageError(f"`loss={loss!r}` must be one of {tuple(ALIGNMENT_LOSSES)}.")
        options = options if options is not None else ALIGNMENT_LOSSES[loss].options()
        overrides = {f"teacher_{key}": value for key, value in (teacher_input or {}).items()}
        geometry, config, column = None, None, None
        if isinstance(teacher, datasets.Dataset):
            settings = precomputed_settings(teacher, features_column)
            clip = replace(ClipSpec(**settings["clip"]), height=height, width=width)
            if clip.num_frames != num_frames:
                raise UsageError(
                    f"`num_frames={num_frames}`, but the precomputed features were made from {clip.num_frames}."
                )
            check_precomputed_settings(settings, clip=clip, options=options, teacher_input=teacher_input)
            grid, teacher_width = tuple(settings["grid"]), settings["hidden_size"]
            drop_first_frame, column = settings["teacher_input"]["drop_first_frame"], features_column
        else:
            name = os.fspath(teacher)
            config = teacher_config(
                name, trust_remote_code=trust_remote_code, revision=teacher_revision, cache_dir=cache_dir
            )
            geometry = teacher_geometry(
                name, TeacherInput.for_teacher(config, num_frames, height, width, **overrides), config
            )
            grid, teacher_width, drop_first_frame = (
                geometry.grid,
                geometry.hidden_size,
                geometry.input.drop_first_frame,
            )
        alignment_config = AlignmentConfig(
            loss=loss,
            depth=depth,
            student_grid=spec.token_grid(num_frames, height, width),
            student_width=spec.hidden_size,
            teacher_grid=grid,
            teacher_width=teacher_width,
            weight=weight,
            options=options,
            projector_hidden_dim=projector_hidden_dim,
            teacher=geometry,
            teacher_config=config,
            features_column=column,
            drop_first_frame=drop_first_frame,
        )
        adapter = ADAPTERS[spec.family](
            spec, tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler
        )
        alignment = Alignment.build(
            alignment_config,
            adapter,
            device=device,
            teacher_dtype=teacher_dtype,
            trust_remote_code=trust_remote_code,
            teacher_revision=teacher_revision,
            cache_dir=cache_dir,
        )
        return cls(alignment, adapter, decoder=decoder)

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        transformer: nn.Module,
        *,
        vae: nn.Module | None = None,
        accelerator=None,
        teacher: datasets.Dataset | None = None,
    ) -> HostAlignment:
        """`attach` with the flags of `diffusers_tsa.cli.add_alignment_arguments(parser, own_loop=False)` (the
        training script's names: `--teacher_model_name_or_path`, `--alignment_depth`, `--alignment_loss`,
        `--alignment_weight`, `--tsa_*`, `--crepa_*`, `--projector_hidden_dim`, `--teacher_*`) and the host's clip
        flags (`--height`, `--width`, `--max_num_frames`, `--cache_dir`); with `accelerator`, on its device and with
        its save/load hooks registered (`register_accelerate_hooks`).

        Args:
            teacher (`datasets.Dataset`, *optional*): a precomputed table the host's batches come from, instead of
                `--teacher_model_name_or_path`.
        """
        if args.alignment_loss == "none":
            raise UsageError("`loss='none'` trains without the term: leave the alignment out of the loop instead.")
        if teacher is None and args.teacher_model_name_or_path is None:
            raise UsageError("`teacher` is needed: give `teacher_model_name_or_path` or a precomputed table.")
        clip = ClipSpec(height=args.height, width=args.width, max_num_frames=args.max_num_frames)
        given = {key: getattr(args, f"teacher_{key}") for key in ("num_frames", "height", "width")}
        alignment = cls.attach(
            transformer,
            teacher=teacher if teacher is not None else args.teacher_model_name_or_path,
            num_frames=clip.num_frames,
            height=clip.height,
            width=clip.width,
            depth=args.alignment_depth,
            loss=args.alignment_loss,
            weight=args.alignment_weight,
            options=loss_options(args, args.alignment_loss),
            projector_hidden_dim=args.projector_hidden_dim,
            teacher_input={key: value for key, value in given.items() if value is not None},
            vae=vae,
            device=accelerator.device if accelerator is not None else "cpu",
            teacher_dtype=getattr(torch, args.teacher_dtype),
            trust_remote_code=args.trust_remote_code,
            teacher_revision=args.teacher_revision,
            cache_dir=getattr(args, "cache_dir", None),
        )
        if accelerator is not None:
            alignment.register_accelerate_hooks(accelerator)
        return alignment

    @property
    def weight(self) -> float:
        """lambda of Eq. 14 (`--alignment_weight`), constant; a host loop that wants a schedule keeps an
        `AlignmentWeight(config.weight, config.schedule)` and `update`s it at each optimizer step."""
        return self.alignment.config.weight

    @property
    def projector(self) -> nn.Module:
        """The projector (also `transformer.alignment_projector`)."""
        return self.alignment.projector

    def _start(self, module: nn.Module, args) -> None:
        if module.training and torch.is_grad_enabled():
            self._captured = self.alignment.extractor.start()

    def _finish(self, module: nn.Module, args, output):
        captured, self._captured = self._captured, None
        if captured is None:
            return None
        self.alignment.extractor.stop()
        if captured.hidden_states is None:
            raise ModelLayoutError(f"Block {self.alignment.config.depth} did not run in the transformer's forward.")
        tokens = self.adapter.alignment_tokens(captured.hidden_states, captured.hidden_states.shape[0])
        parameter = next(self.projector.parameters())
        self.student = self.projector(tokens.to(parameter.dtype))
        # Ties the projector into the forward's output (adding an exact zero), so that DDP with
        # `find_unused_parameters=True` counts its weights as used by this forward.
        tie = self.student.sum() * 0
        if isinstance(output, torch.Tensor):
            return output + tie.to(output.dtype)
        if isinstance(output, tuple):
            return (output[0] + tie.to(output[0].dtype), *output[1:])
        output.sample = output.sample + tie.to(output.sample.dtype)
        return output

    def targets(
        self, *, videos: torch.Tensor | None = None, latents: torch.Tensor | None = None, batch: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher features `(B, F, H, W, C)` and M-TSA queries `(B, F, H, W)` (or `None`): from pixel clips
        `videos` `(B, T, C, H, W)` in [-1, 1], from the host's `latents` (decoded with the VAE or `decoder`,
        `ModelAdapter.decode_latents`), or from a precomputed `batch` (`teacher_features`, `motion_mask`); the
        same computation as the training script's (`Alignment.targets`)."""
        return self.alignment.targets(self._batch(videos, latents, batch))

    def _batch(self, videos, latents, batch) -> dict:
        if sum(x is not None for x in (videos, latents, batch)) != 1:
            raise UsageError("Pass exactly one of `videos`, `latents` and `batch`.")
        if latents is not None:
            if self.adapter.vae is None and self.decoder is None:
                raise UsageError("`latents` are decoded with the VAE: attach with `vae=` (or `decoder=`).")
            videos = self.adapter.decode_latents(latents, decoder=self.decoder)
        return {"videos": videos} if videos is not None else batch

    def loss(
        self, *, videos: torch.Tensor | None = None, latents: torch.Tensor | None = None, batch: dict | None = None
    ) -> torch.Tensor:
        """The unweighted alignment loss of the last training forward's projected features against the targets of
        the same clips (`targets`); multiply by `weight` and add it to the host's loss."""
        if self.student is None:
            raise UsageError(
                "No student features: call `loss` after the transformer's forward, in training mode with gradients."
            )
        student, self.student = self.student, None
        value = self.alignment.loss(student, self._batch(videos, latents, batch))
        self.last_loss = value.detach()
        return value

    def logs(self) -> dict[str, float]:
        """`{"loss/alignment": ...}` of the last `loss`, the training script's name, for the host's `accelerator.log`."""
        return {} if self.last_loss is None else {"loss/alignment": self.last_loss.item()}

    def register_accelerate_hooks(self, accelerator) -> None:
        """Saves the projector in each `accelerator.save_state` folder (`alignment_projector/`, main process) and
        loads it back in `load_state`, beside the host's own hooks, whatever they do with `models` and `weights`."""

        def save(models, weights, output_dir):
            if accelerator.is_main_process:
                self.alignment.save_projector(output_dir)

        def load(models, input_dir):
            self.alignment.load_projector(input_dir)
            logger.info("Loaded the alignment projector from %s.", input_dir)

        accelerator.register_save_state_pre_hook(save)
        accelerator.register_load_state_pre_hook(load)

    def save_projector(self, output_dir: str | os.PathLike) -> None:
        """Writes the projector to `output_dir/alignment_projector` (`Alignment.save_projector`)."""
        self.alignment.save_projector(output_dir)

    def load_projector(self, input_dir: str | os.PathLike) -> None:
        """Loads what `save_projector` wrote (`Alignment.load_projector`)."""
        self.alignment.load_projector(input_dir)

    def detach(self) -> None:
        """Removes the hooks and the projector from the transformer, leaving it as it was."""
        for handle in self._handles:
            handle.remove()
        self.alignment.extractor.remove()
        delattr(unwrap_model(self.adapter.transformer), PROJECTOR_ATTRIBUTE)


def _without_projector(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """State-dict post-hook: the transformer's `state_dict` leaves the projector out (it is saved beside)."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}{PROJECTOR_ATTRIBUTE}.")]:
        del state_dict[key]


def _projector_not_missing(module: nn.Module, incompatible_keys) -> None:
    """Load post-hook: a stock state dict loads strictly though it has no projector."""
    missing = incompatible_keys.missing_keys
    missing[:] = [key for key in missing if f"{PROJECTOR_ATTRIBUTE}." not in key]
