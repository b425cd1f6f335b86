"""`ModelSpec`: one model family's checkpoint as read from its configs, with no weight loaded.

A spec knows the family's shape rules and refuses what the model cannot take, fills in the family's defaults for a
training run (`for_training`), loads the stock pipeline with trained weights, and generates with it. It also states,
as plain attributes, what the model card's "Use it" code needs to know about the family (`usage_*`,
`trained_slot`); `diffusers_tsa.training.card_code` writes that code. The training components are the family's
`ModelAdapter` (`adapters/adapter.py`).
"""

from __future__ import annotations

import abc
import math
import os
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from ..compat import dtype_argument
from ..errors import ModelLayoutError
from .flow_matching import FlowMatching
from .options import GenerationSettings, TrainingOptions


Grid = tuple[int, int, int]

#: The LoRA file a training run writes (diffusers' `load_lora_weights` default).
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
#: Pixel frames per latent frame of CogVideoX's VAE: the time a teacher frame of `--teacher_frames latent`, and so a
#: CREPA neighbour step, spans on CogVideoX (SimpleTuner's CREPA setting), which every family's default keeps
#: (`ModelSpec.teacher_frames_per_token_frame`).
REFERENCE_FRAME_SPACING = 4


def frame_count_problem(num_frames: int, step: int) -> str:
    """The `check_clip` reason for a frame count that is not `step`k+1, with the two nearest that are."""
    k = max(0, (num_frames - 1) // step)
    return f"`num_frames={num_frames}` must be {step}k+1 (e.g. {step * k + 1} or {step * (k + 1) + 1})"


def side_problem(name: str, value: int, step: int, why: str = "") -> list[str]:
    """The `check_clip` reason (a list of none or one) for a side `name` that is not a positive multiple of `step`,
    with the two nearest that are; `why` names what sets the step."""
    if value % step == 0 and value >= step:
        return []
    low, reason = max(step, value - value % step), f"{why}; " if why else ""
    return [f"`{name}={value}` must be a multiple of {step} ({reason}e.g. {low} or {low + step})"]


@dataclass(frozen=True)
class ModelSpec(abc.ABC):
    """A checkpoint of one model family, as read from its configs without loading any weight.

    Attributes:
        pretrained_model_name_or_path (`str`): the base pipeline (Hub id or folder).
        num_blocks (`int`): blocks that an alignment `depth` counts.
        hidden_size (`int`): width of the hooked block's hidden states (the projector's input).
        min_depth (`int`): the shallowest block whose output carries spatio-temporal video tokens.
        revision (`str`, *optional*): Hub revision of the checkpoint.
        cache_dir (`str`, *optional*): Hub cache folder.
        options (`TrainingOptions`, *optional*): the options of the run this spec was made for (`for_training`),
            with the family's defaults filled in (`max_sequence_length` is never `None`); `None` for a spec read
            from its configs alone (evaluation).
        tasks (`frozenset[str]`, defaults to `{"t2v"}`): what the checkpoint generates, a subset of `{"t2v", "i2v"}`
            (text-to-video, image-to-video conditioned on a first frame), read from its configs (`read_tasks`).
    """

    #: The adapter family (`"cogvideox"`, `"nova"`), the training script's `--model_family`.
    family: ClassVar[str]
    #: `_class_name` of this family's `model_index.json`.
    pipeline_class_name: ClassVar[str]
    #: Other `_class_name`s the family's checkpoints are published as, which `load_spec(..., family="auto")` reads
    #: as this family (pipelines with the components of `pipeline_class_name`, which loads them).
    detected_pipeline_class_names: ClassVar[tuple[str, ...]] = ()
    #: The transformer's class (in diffusers, for the families whose `transformer_class` does not override it).
    transformer_class_name: ClassVar[str] = ""
    #: The VAE's class in diffusers, whose config `from_configs` reads.
    vae_class_name: ClassVar[str] = ""
    #: Samplers `use_sampler` can put in a pipeline; the first is the family's evaluation protocol, `"pipeline"`
    #: keeps the checkpoint's own scheduler.
    samplers: ClassVar[tuple[str, ...]] = ("pipeline",)
    #: Whether the family's evaluation protocol decodes with VAE slicing and tiling on (`eval.generate`'s default).
    protocol_vae_tiling: ClassVar[bool] = False
    #: The family's frame rate: of the validation, evaluation and model card videos alike.
    fps: ClassVar[int] = 8
    #: Text tokens per prompt when `max_sequence_length` is not given: the family's pipeline default.
    default_max_sequence_length: ClassVar[int]
    #: Whether the family trains with `FlowMatching` (its options are refused otherwise).
    uses_flow_matching: ClassVar[bool] = False
    #: The stock image-to-video pipeline of the family (diffusers' class name), which `pipeline_class` gives for a run
    #: with `TrainingOptions.image_to_video`; `None`: the family has no image-to-video task.
    image_to_video_pipeline_class_name: ClassVar[str | None] = None
    #: Other `_class_name`s of the family's image-to-video checkpoints (read as the family by `load_spec` and as the
    #: `"i2v"` task by `read_tasks`), e.g. `LTXConditionPipeline`.
    detected_image_to_video_pipeline_class_names: ClassVar[tuple[str, ...]] = ()
    #: `first_frame_conditioning_p` of a checkpoint that trains text- and image-to-video in one (both in `tasks`)
    #: when the run does not give it; an image-to-video-only checkpoint always conditions (1.0).
    default_first_frame_conditioning_p: ClassVar[float] = 1.0

    pretrained_model_name_or_path: str
    num_blocks: int
    hidden_size: int
    min_depth: int
    revision: str | None = None
    cache_dir: str | None = None
    options: TrainingOptions | None = None
    tasks: frozenset[str] = frozenset({"t2v"})

    @classmethod
    def from_configs(
        cls,
        pretrained_model_name_or_path: str,
        model_index: dict,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
    ) -> ModelSpec:
        """Reads the model's configs (no weights); `model_index` is its `model_index.json`, already read. Here the
        transformer's and the VAE's diffusers configs (`transformer_class_name`, `vae_class_name`), read into
        `from_model_configs`; families outside diffusers override it."""
        import diffusers

        kwargs = {"revision": revision, "cache_dir": cache_dir}
        name = pretrained_model_name_or_path
        config = getattr(diffusers, cls.transformer_class_name).load_config(name, subfolder="transformer", **kwargs)
        vae = getattr(diffusers, cls.vae_class_name).load_config(name, subfolder="vae", **kwargs)
        spec = cls.from_model_configs(name, config, vae, model_index, revision=revision, cache_dir=cache_dir)
        return replace(spec, tasks=cls.read_tasks(model_index, config))

    @classmethod
    def image_to_video_class_names(cls) -> tuple[str, ...]:
        """The `_class_name`s of the family's image-to-video checkpoints: `image_to_video_pipeline_class_name` and
        `detected_image_to_video_pipeline_class_names`."""
        names = (cls.image_to_video_pipeline_class_name, *cls.detected_image_to_video_pipeline_class_names)
        return tuple(name for name in names if name)

    @classmethod
    def read_tasks(cls, model_index: dict, transformer_config: dict) -> frozenset[str]:
        """The checkpoint's `tasks` from its `model_index.json` and transformer config: `{"i2v"}` for an
        image-to-video pipeline class (`image_to_video_class_names`), `{"t2v"}` otherwise. Families whose transformer
        config tells (CogVideoX-I2V's doubled input channels) or whose one checkpoint does both override it."""
        return frozenset({"i2v"} if model_index.get("_class_name") in cls.image_to_video_class_names() else {"t2v"})

    @classmethod
    def from_model_configs(
        cls,
        pretrained_model_name_or_path: str,
        transformer_config: dict,
        vae_config: dict | None,
        model_index: dict,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
    ) -> ModelSpec:
        """The spec of configs already read: the transformer's, the VAE's (`None`: the family's usual VAE) and the
        pipeline's `model_index.json` (`{}` for a bare transformer); what `from_configs` and `student_spec` (a model
        already loaded by another trainer) share. Families whose configs are not diffusers' refuse it."""
        raise ModelLayoutError(
            f"A {cls.family} spec is read from its checkpoint's configs: pass `pretrained_model_name_or_path` to "
            "`load_spec`."
        )

    @staticmethod
    def transformer_fields(name: str, config: dict, *, revision: str | None, cache_dir: str | None) -> dict[str, Any]:
        """The fields every spec reads the same way from a diffusers transformer config (`num_layers` blocks,
        `num_attention_heads * attention_head_dim` wide, each block alignable), for `from_configs`."""
        return {
            "pretrained_model_name_or_path": name,
            "num_blocks": config["num_layers"],
            "hidden_size": config["num_attention_heads"] * config["attention_head_dim"],
            "min_depth": 1,
            "revision": revision,
            "cache_dir": cache_dir,
        }

    # --- Shape rules and checks ---------------------------------------------------------------------------

    @abc.abstractmethod
    def token_grid(self, num_frames: int, height: int, width: int) -> Grid:
        """The (F, H, W) grid of the hooked block's video tokens for clips of this size."""

    @abc.abstractmethod
    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        """Raises `GridError`, naming the sizes that work, for a clip size the model cannot take."""

    @property
    def frame_spacing(self) -> float:
        """Pixel frames per student token frame after frame 0 (the VAE's temporal compression times the
        transformer's temporal patch): 4 for CogVideoX, Wan and NOVA, 8 for LTX-Video, LTX-2 and CogVideoX 1.5. Read
        from `token_grid` on a clip of 1025 frames, long enough that no temporal padding changes the ratio."""
        frames = 1025
        return (frames - 1) / (self.token_grid(frames, 1024, 1024)[0] - 1)

    @property
    def teacher_frames_per_token_frame(self) -> int:
        """How many teacher frames `--teacher_frames latent` gives each student token frame:
        `ceil(frame_spacing / REFERENCE_FRAME_SPACING)`, so that a teacher frame, and a CREPA neighbour step on it
        (`--crepa_adjacent_distance 1`), spans at most CogVideoX's 4 pixel frames: 1 for the 4x VAEs, 2 for the 8x
        ones (whose latent frames would make each CREPA step span 8 pixel frames, twice CogVideoX's)."""
        return math.ceil(self.frame_spacing / REFERENCE_FRAME_SPACING)

    def teacher_latent_frames(self, num_frames: int, height: int, width: int) -> int:
        """The frames `--teacher_frames latent` shows the teacher for a clip of this size (`TeacherInput`'s
        `latent_frames`): `teacher_frames_per_token_frame` per student token frame, frame 0 included."""
        return self.token_grid(num_frames, height, width)[0] * self.teacher_frames_per_token_frame

    @property
    def default_depth(self) -> int:
        """The block aligned by default: the paper's share of the blocks (18 of CogVideoX-2B's 30, its best in the
        depth ablation), within [min_depth, num_blocks]. Families may state another with their reason."""
        return min(max(round(0.6 * self.num_blocks), self.min_depth), self.num_blocks)

    def check_depth(self, depth: int) -> None:
        """Raises `ModelLayoutError` for an alignment `depth` outside [min_depth, num_blocks]."""
        if not self.min_depth <= depth <= self.num_blocks:
            raise ModelLayoutError(
                f"`depth={depth}` is out of range for this {self.family} model: it must be in "
                f"[{self.min_depth}, {self.num_blocks}] (depth d aligns the output of the d-th block; the paper "
                "uses 18 for CogVideoX-2B)."
            )

    def check_options(
        self,
        *,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        use_dynamic_cfg: bool | None = None,
        training: TrainingOptions = TrainingOptions(),
    ) -> None:
        """Raises `ModelLayoutError` for an option the family does not support: here, flow-matching options for a
        family that does not train with flow matching, and an expert for a single-transformer checkpoint."""
        if not self.uses_flow_matching and training.flow_matching != FlowMatching():
            raise ModelLayoutError(
                f"{self.family} does not train with flow matching: drop the `flow_matching` options."
            )
        if training.expert is not None:
            raise ModelLayoutError(
                f"`expert={training.expert!r}`: this {self.family} checkpoint has one transformer; experts are for "
                "two-expert checkpoints (Wan 2.2 A14B)."
            )
        self.check_task(training.image_to_video)
        self.check_first_frame_conditioning_p(training)

    def check_task(self, image_to_video: bool) -> None:
        """Raises `ModelLayoutError` for a task the checkpoint does not have (`tasks`): `image_to_video` on a
        text-to-video-only checkpoint, or its absence on an image-to-video-only one."""
        name = self.pretrained_model_name_or_path
        if image_to_video and "i2v" not in self.tasks:
            pipeline = self.image_to_video_pipeline_class_name
            fix = f"an image-to-video checkpoint ({pipeline})" if pipeline else "a family with image-to-video"
            raise ModelLayoutError(
                f"`image_to_video=True` (--image_to_video): {name!r} is a text-to-video {self.family} checkpoint; "
                f"train {fix}, or drop --image_to_video."
            )
        if not image_to_video and "t2v" not in self.tasks:
            raise ModelLayoutError(
                f"`image_to_video=False`: {name!r} is an image-to-video {self.family} checkpoint (it generates from a "
                "first frame); pass --image_to_video."
            )

    def check_first_frame_conditioning_p(self, training: TrainingOptions) -> None:
        """Raises `ModelLayoutError` for a `first_frame_conditioning_p` the run cannot use: given without
        `image_to_video`, outside [0, 1], or other than 1.0 for an image-to-video-only checkpoint."""
        p = training.first_frame_conditioning_p
        if p is None:
            return
        if not training.image_to_video:
            raise ModelLayoutError(
                f"`first_frame_conditioning_p={p}` (--first_frame_conditioning_p) conditions image-to-video training: "
                "pass --image_to_video, or drop it."
            )
        if not 0.0 <= p <= 1.0:
            raise ModelLayoutError(f"`first_frame_conditioning_p={p}` must be a share in [0, 1].")
        if "t2v" not in self.tasks and p != 1.0:
            raise ModelLayoutError(
                f"`first_frame_conditioning_p={p}`: this {self.family} image-to-video checkpoint is always given its "
                "first frame; drop --first_frame_conditioning_p (or pass 1.0)."
            )

    def resolve_max_sequence_length(self, max_sequence_length: int | None) -> int:
        """`max_sequence_length`, or the family's `default_max_sequence_length` for `None`."""
        return self.default_max_sequence_length if max_sequence_length is None else max_sequence_length

    def for_training(self, options: TrainingOptions) -> ModelSpec:
        """The spec as a run with `options` trains it: `options` checked (`check_options`) and held, with the
        family's defaults filled in (`max_sequence_length`; `first_frame_conditioning_p` of an image-to-video run), in
        `options`; what the run saves and the model card's
        code follow from them (Wan 2.2 A14B's expert)."""
        self.check_options(training=options)
        length = self.resolve_max_sequence_length(options.max_sequence_length)
        p = options.first_frame_conditioning_p
        if options.image_to_video and p is None:
            p = self.default_first_frame_conditioning_p if "t2v" in self.tasks else 1.0
        return replace(self, options=replace(options, max_sequence_length=length, first_frame_conditioning_p=p))

    @property
    def trained_slot(self) -> str | None:
        """The pipeline component that the trained transformer is, and the subfolder a full fine-tune is saved in:
        `"transformer"`; `None` where only the saved files tell (a two-expert checkpoint whose spec was not made
        `for_training`)."""
        return "transformer"

    def saved_files(self, training_mode: str) -> tuple[str, ...]:
        """The files a training run writes for `training_mode` (`"lora"` or `"full"`), and each checkpoint holds:
        the LoRA file, or the config of the full transformer in `trained_slot` (none known without it)."""
        if training_mode == "lora":
            return (LORA_WEIGHT_NAME,)
        return (f"{self.trained_slot}/config.json",) if self.trained_slot else ()

    # --- Stock pipeline ----------------------------------------------------------------------------------------

    @property
    def pipeline_class(self) -> type:
        """The stock pipeline class that loads this checkpoint and what training writes (diffusers'
        `pipeline_class_name`, or `image_to_video_pipeline_class_name` for an image-to-video checkpoint or run;
        families outside diffusers override it)."""
        import diffusers

        return getattr(
            diffusers, self.image_to_video_pipeline_class_name if self.image_to_video else self.pipeline_class_name
        )

    @property
    def image_to_video(self) -> bool:
        """Whether its pipelines take an `image`: an image-to-video-only checkpoint, or a spec made `for_training` an
        image-to-video run."""
        return self.tasks == {"i2v"} or (self.options is not None and self.options.image_to_video)

    @property
    def transformer_class(self) -> type:
        """The transformer class (`from_pretrained` of a full fine-tune): diffusers' `transformer_class_name`."""
        import diffusers

        return getattr(diffusers, self.transformer_class_name)

    def load_trained_pipeline(
        self,
        *,
        lora: str | os.PathLike | None = None,
        transformer: str | os.PathLike | None = None,
        transformer_subfolder: str | None = "transformer",
        lora_weight_name: str | None = None,
        lora_scale: float = 1.0,
        variant: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = "cpu",
    ) -> Any:
        """The stock pipeline of this checkpoint, as a user loads a training run's output.

        Args:
            lora (`str` or `os.PathLike`, *optional*): a LoRA (training output folder or Hub id) to load on the base.
            transformer (`str` or `os.PathLike`, *optional*): a fine-tuned transformer replacing the base one.
            transformer_subfolder (`str`, *optional*, defaults to `"transformer"`): where `transformer` holds it
                (the training script's layout); `None` for a bare transformer folder.
            lora_weight_name (`str`, *optional*): the LoRA file, when the folder holds several.
            lora_scale (`float`, defaults to 1.0): strength of the LoRA.
            variant (`str`, *optional*): weights variant of the base model, e.g. `"fp16"`.
            dtype (`torch.dtype`, defaults to `torch.float32`): weights dtype.
            device (`torch.device` or `str`, *optional*): where the pipeline goes; `None` leaves it on the CPU
                (for `enable_model_cpu_offload`).
        """
        if lora is not None and transformer is not None:
            raise ModelLayoutError("Pass `lora` or `transformer`, not both: a LoRA goes on the base transformer.")
        kwargs = {"revision": self.revision, "variant": variant, "cache_dir": self.cache_dir, dtype_argument(): dtype}
        if transformer is not None:
            kwargs["transformer"] = self.transformer_class.from_pretrained(
                transformer, subfolder=transformer_subfolder, cache_dir=self.cache_dir, **{dtype_argument(): dtype}
            )
        pipe = self.pipeline_class.from_pretrained(self.pretrained_model_name_or_path, **kwargs)
        if lora is not None:
            self._load_lora(pipe, lora, weight_name=lora_weight_name, scale=lora_scale)
        return pipe if device is None else pipe.to(device)

    def _load_lora(self, pipe, lora: str | os.PathLike, *, weight_name: str | None, scale: float) -> None:
        """Loads a LoRA with diffusers' `load_lora_weights`: rank and alpha come from the file's metadata."""
        pipe.load_lora_weights(lora, weight_name=weight_name)
        if scale != 1.0:
            pipe.set_adapters(pipe.get_active_adapters(), [scale])

    # --- What the model card's "Use it" code needs (`diffusers_tsa.training.card_code`) ------------------------

    #: The modules the card's code imports the pipeline and `export_to_video` from, and the dtype it generates in on
    #: a GPU.
    usage_imports: ClassVar[tuple[str, str]] = ("diffusers", "diffusers.utils")
    usage_dtype: ClassVar[str] = "bfloat16"
    #: `(module, function)` that loads a LoRA as `function(pipe.transformer, weights)`, for a pipeline without
    #: `load_lora_weights`; `None`: the card calls `pipe.load_lora_weights`.
    usage_lora_loader: ClassVar[tuple[str, str] | None] = None
    #: The call that loads a LoRA file into the stock pipeline (with the file's name and `usage_lora_kwargs`), where
    #: `usage_lora_loader` is `None`: the pipeline's own loader, or the transformer's (`load_lora_adapter`) for a
    #: pipeline without one.
    usage_lora_method: ClassVar[str] = "pipe.load_lora_weights"

    @property
    def usage_lora_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `load_lora_weights`, beyond the file's name, that put the trained LoRA in
        `trained_slot`: none here."""
        return {}

    @property
    def usage_transformer(self) -> tuple[str, str]:
        """The module the card's code imports `transformer_class` from, and its name."""
        return "diffusers", self.transformer_class_name

    # --- Generation --------------------------------------------------------------------------------------------

    def sampler(self, name: str | None = None) -> str:
        """The sampler `name` checked against `samplers`; `None` is the family's protocol (the first)."""
        if name is None:
            return self.samplers[0]
        if name not in self.samplers:
            raise ModelLayoutError(
                f"`scheduler={name!r}` is not a {self.family} sampler; choose one of {self.samplers}."
            )
        return name

    def use_sampler(self, pipe, name: str | None = None) -> str:
        """Puts the sampler `name` (see `sampler`) in `pipe` and returns its name; `"pipeline"` changes nothing."""
        return self.sampler(name)

    @abc.abstractmethod
    def pipeline_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """The keyword arguments of this family's pipeline call for `settings` (a `None` `max_sequence_length` is
        `resolve_max_sequence_length`'s default)."""

    def configure_pipeline(self, pipe, settings: GenerationSettings) -> None:
        """Sets on `pipe` what the family's pipeline takes as attributes rather than call arguments (the card's code
        does the same with `usage_setup`): nothing here."""

    def usage_setup(self, settings: GenerationSettings) -> list[str]:
        """The lines of the card's code that do what `configure_pipeline` does, on `pipe`: none here."""
        return []

    @property
    def usage_requirements(self) -> tuple[str, ...]:
        """Packages the card's code needs beyond torch and diffusers' own requirements (its `# pip install` line):
        none here."""
        return ()

    def generate(
        self,
        pipe,
        prompt: str,
        settings: GenerationSettings,
        generator: torch.Generator | None = None,
        image: Any = None,
    ) -> np.ndarray:
        """One video of `prompt`: float32 frames `(T, H, W, 3)` in [0, 1], what `export_to_video` takes; `image` (a
        PIL image) is the first frame an image-to-video pipeline starts from."""
        self.configure_pipeline(pipe, settings)
        kwargs = self.pipeline_kwargs(settings) | ({} if image is None else self.image_kwargs(image))
        return pipe(prompt=prompt, generator=generator, output_type="np", **kwargs).frames[0]

    def image_kwargs(self, image: Any) -> dict[str, Any]:
        """The image-to-video pipeline's arguments for the first frame `image` (a PIL image): `{"image": image}`."""
        return {"image": image}
