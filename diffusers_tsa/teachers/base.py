"""The `VideoTeacher` interface: a frozen video encoder that turns a training clip into a token grid."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange

from ..choices import TEACHER_FRAMES
from ..errors import CheckpointError, GridError, UsageError


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TeacherInput:
    """What the teacher sees of a training clip (paper setting: 48 frames at 160x240 of a 49 x 480x720 clip).

    Args:
        num_frames (`int`): frames given to the teacher, picked uniformly (rounded indices) from the clip's frames
            after the first is dropped; all of them when they are exactly `num_frames`.
        height (`int`): teacher input height; frames are bicubic-resized to it.
        width (`int`): teacher input width.
        drop_first_frame (`bool`, defaults to `True`): drop the clip's first frame, which CogVideoX's VAE encodes
            on its own, so that the teacher's frames line up with the student's latent frames 2..13.
        frame_pooling (`int`, defaults to 1): average the teacher's frame features after the first in groups of
            this many, the first frame alone (VideoREPA's DINOv2 path: 49 frames -> 1 + 48 / 4 = 13, one per latent
            frame); needs `drop_first_frame=False` and a teacher that sees one frame at a time.
    """

    num_frames: int
    height: int
    width: int
    drop_first_frame: bool = True
    frame_pooling: int = 1

    @classmethod
    def for_clip(
        cls,
        num_frames: int,
        height: int,
        width: int,
        *,
        teacher_num_frames: int | None = None,
        teacher_height: int | None = None,
        teacher_width: int | None = None,
        drop_first_frame: bool = True,
        patch_size: int = 1,
        tubelet_size: int = 1,
        frames: str = "uniform",
        latent_frames: int | None = None,
    ) -> TeacherInput:
        """The paper's rule for a clip of `num_frames x height x width`: every frame but the first, at one third of
        the height and width, each rounded to the nearest multiple of the teacher's `patch_size` (and the frames
        down to a multiple of its `tubelet_size`): 49 x 480x720 -> 48 x 160x240 exactly, 81 x 480x832 -> 80 x 160x272.
        Each `teacher_*` argument that is given overrides its default.

        With `frames="latent"` the teacher sees one frame per student latent frame instead, frame 0 included
        (`latent_frames` of them, picked uniformly: 0, 4, ..., 48 of 49 for 13); with `frames="pooled"` it sees every
        frame and averages the features after the first per latent frame (`frame_pooling = (num_frames - 1) /
        (latent_frames - 1)`: 4 for 49 frames and 13 latent frames).

        Raises:
            `UsageError`: for `frames` not in `TEACHER_FRAMES`, a `teacher_num_frames` with `"latent"` or
                `"pooled"` (their frame count is the student's), no `latent_frames` for them, or latent frames that
                do not pool the clip's frames evenly.
        """
        if frames not in TEACHER_FRAMES:
            raise UsageError(f"`teacher_frames={frames!r}` must be one of {TEACHER_FRAMES}.")
        size = {
            "height": teacher_height or _nearest_multiple(height / 3, patch_size),
            "width": teacher_width or _nearest_multiple(width / 3, patch_size),
        }
        if frames == "uniform":
            return cls(
                num_frames=teacher_num_frames or _multiple_below(num_frames - int(drop_first_frame), tubelet_size),
                drop_first_frame=drop_first_frame,
                **size,
            )
        if teacher_num_frames is not None or latent_frames is None:
            raise UsageError(
                f"`teacher_frames={frames!r}` gives the teacher the student's latent frames: it takes no "
                "`TeacherInput.num_frames`, and needs the student (`latent_frames`)."
            )
        if frames == "latent":
            return cls(num_frames=latent_frames, drop_first_frame=False, **size)
        if latent_frames < 2 or (num_frames - 1) % (latent_frames - 1):
            raise UsageError(
                f"`teacher_frames='pooled'` averages the {num_frames - 1} frames after the first per latent frame, "
                f"which {latent_frames} latent frames do not divide evenly; use 'latent' or 'uniform'."
            )
        pooling = (num_frames - 1) // (latent_frames - 1)
        return cls(num_frames=num_frames, drop_first_frame=False, frame_pooling=pooling, **size)

    @classmethod
    def for_teacher(
        cls,
        config,
        num_frames: int,
        height: int,
        width: int,
        *,
        teacher_num_frames: int | None = None,
        teacher_height: int | None = None,
        teacher_width: int | None = None,
        drop_first_frame: bool = True,
        frames: str = "uniform",
        latent_frames: int | None = None,
    ) -> TeacherInput:
        """`for_clip` on the patch grid of the teacher whose transformers `config` is given (`teacher_config`):
        49 x 480x848 -> 48 x 160x288 for a ViT-B/16, a size its patches divide."""
        sizes = patch_sizes(config)
        return cls.for_clip(
            num_frames,
            height,
            width,
            teacher_num_frames=teacher_num_frames,
            teacher_height=teacher_height,
            teacher_width=teacher_width,
            drop_first_frame=drop_first_frame,
            patch_size=sizes["patch_size"],
            tubelet_size=sizes["tubelet_size"],
            frames=frames,
            latent_frames=latent_frames,
        )


def _nearest_multiple(value: float, step: int) -> int:
    return max(step, step * round(value / step))


def _multiple_below(value: int, step: int) -> int:
    return max(step, value - value % step)


def patch_sizes(config) -> dict[str, int]:
    """`patch_size`, `tubelet_size` and `hidden_size` of a transformers ViT config: a video ViT's (VideoMAE,
    V-JEPA 2), or an image ViT's (DINOv2), which sees one frame at a time: tubelet 1."""
    return {
        "patch_size": config.patch_size,
        "tubelet_size": getattr(config, "tubelet_size", 1),
        "hidden_size": config.hidden_size,
    }


def multiples_near(value: int, step: int) -> str:
    """The multiples of `step` (at least `step`) nearest `value`, for messages: `"144 or 160"`."""
    low = max(step, value - value % step)
    return f"{low} or {low + step}" if low != value else str(value)


@dataclass(frozen=True)
class TeacherGeometry:
    """A teacher's token layout for one input: known from its config alone, before any weight is loaded.

    Args:
        name (`str`): checkpoint name or path, for messages.
        input (`TeacherInput`): frames and size the teacher sees.
        patch_size (`int`): spatial patch size `Ph = Pw`.
        tubelet_size (`int`): temporal patch size `Pt`.
        hidden_size (`int`): token width `C`.

    Raises:
        `GridError`: when the patch or tubelet does not divide the input, naming the flag and sizes that would work.
    """

    name: str
    input: TeacherInput
    patch_size: int
    tubelet_size: int
    hidden_size: int

    def __post_init__(self):
        bad = [
            f"`TeacherInput.{field}={value}` is not a multiple of the {kind} {step} "
            f"(use {multiples_near(value, step)})"
            for field, value, step, kind in (
                ("num_frames", self.input.num_frames, self.tubelet_size, "tubelet"),
                ("height", self.input.height, self.patch_size, "patch"),
                ("width", self.input.width, self.patch_size, "patch"),
            )
            if value % step or value < step
        ]
        pooling = self.input.frame_pooling
        if pooling < 1:
            bad.append(f"`TeacherInput.frame_pooling={pooling}` must be >= 1")
        elif pooling > 1 and (self.input.drop_first_frame or self.tubelet_size != 1):
            bad.append(
                f"`TeacherInput.frame_pooling={pooling}` pools frame features after the first: it needs the first "
                "frame (`drop_first_frame=False`) and a teacher of one frame at a time (tubelet 1)"
            )
        elif pooling > 1 and (self.input.num_frames - 1) % pooling:
            bad.append(
                f"`TeacherInput.frame_pooling={pooling}` must divide the {self.input.num_frames - 1} frames after the "
                "first"
            )
        if bad:
            raise GridError(f"The input of teacher {self.name!r} does not fit its patch grid: {'; '.join(bad)}.")

    @property
    def tubelet(self) -> tuple[int, int, int]:
        """`(Pt, Ph, Pw)`, the pixel size of one token, also the motion mask's tubelet."""
        return (self.tubelet_size, self.patch_size, self.patch_size)

    @property
    def encoded_grid(self) -> tuple[int, int, int]:
        """`(F, H, W)`, the token grid of the backbone, before `frame_pooling`."""
        return (
            self.input.num_frames // self.tubelet_size,
            self.input.height // self.patch_size,
            self.input.width // self.patch_size,
        )

    @property
    def grid(self) -> tuple[int, int, int]:
        """`(F, H, W)`, the token grid of `encode` (after `frame_pooling`)."""
        frames, height, width = self.encoded_grid
        if self.input.frame_pooling > 1:
            frames = 1 + (frames - 1) // self.input.frame_pooling
        return (frames, height, width)


def check_weights(
    name: str, loading_info: Mapping[str, Iterable], *, fix: str, reads: tuple[str, ...] = ("",)
) -> None:
    """Refuses a checkpoint whose weights do not fill its model, which would leave some of them at random.

    Args:
        name (`str`): the checkpoint, for the message.
        loading_info (`Mapping`): `missing_keys`, `unexpected_keys` and `mismatched_keys`, as transformers'
            `from_pretrained(..., output_loading_info=True)` gives them (a mismatched key is its name in
            transformers 4, a `(name, checkpoint shape, model shape)` tuple in transformers 5).
        fix (`str`): what would work, for the message.
        reads (`tuple[str, ...]`, defaults to every key): key prefixes of the weights that are used; others (a
            pretraining decoder, a classification head, a final norm that is removed) may be absent or extra.

    Raises:
        `CheckpointError`: naming the checkpoint, and how many keys of each kind, with the first few.
    """
    kinds = {
        "missing": loading_info["missing_keys"],
        "unexpected": loading_info["unexpected_keys"],
        "of another shape": [key if isinstance(key, str) else key[0] for key in loading_info["mismatched_keys"]],
    }
    problems = []
    for kind, keys in kinds.items():
        keys = sorted(key for key in keys if key.startswith(reads))
        if keys:
            problems.append(f"{len(keys)} {kind} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    if problems:
        raise CheckpointError(
            f"The weights of `name_or_path={name!r}` do not fit its config, which would leave some at random: "
            f"{'; '.join(problems)}. {fix}"
        )


class VideoTeacher(torch.nn.Module):
    """A frozen video foundation model seen through one interface (paper Eq. 4: `E_vfm = g(V)`).

    A teacher knows its input (`TeacherInput`), its normalisation, its tubelet `(Pt, Ph, Pw)` (also the motion
    mask's), its token grid `(F, H, W)` and width `C`. `encode` returns the output of its last block for every
    token, with no final norm and no pooling (VideoREPA's convention). Subclasses set `backbone_class` (what
    `from_pretrained` loads) and `weight_prefixes`, and implement `_tokens`.

    Args:
        backbone (`torch.nn.Module`): the encoder; frozen and put in eval mode here.
        name (`str`): checkpoint name or path, part of the fingerprint.
        input (`TeacherInput`): frames and size the teacher sees.
        patch_size (`int`): spatial patch size `Ph = Pw`.
        tubelet_size (`int`): temporal patch size `Pt`.
        hidden_size (`int`): token width `C`.
        mean (`tuple[float, float, float]`, defaults to ImageNet's): per-channel mean of inputs in [0, 1].
        std (`tuple[float, float, float]`, defaults to ImageNet's): per-channel std of inputs in [0, 1].
    """

    #: The transformers model class (its name, imported on loading) that `from_pretrained` loads the backbone with.
    backbone_class: str
    #: State-dict key prefixes of the weights `encode` reads, which a checkpoint must fill exactly.
    weight_prefixes: tuple[str, ...] = ("",)

    def __init__(
        self,
        backbone: torch.nn.Module,
        *,
        name: str,
        input: TeacherInput,
        patch_size: int,
        tubelet_size: int,
        hidden_size: int,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        super().__init__()
        self.geometry = TeacherGeometry(name, input, patch_size, tubelet_size, hidden_size)
        self.backbone = backbone.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 1, 3, 1, 1), persistent=False)

    @property
    def name(self) -> str:
        """Checkpoint name or path."""
        return self.geometry.name

    @property
    def input(self) -> TeacherInput:
        """Frames and size the teacher sees."""
        return self.geometry.input

    @property
    def hidden_size(self) -> int:
        """Token width `C`."""
        return self.geometry.hidden_size

    @property
    def tubelet(self) -> tuple[int, int, int]:
        """`(Pt, Ph, Pw)`, the pixel size of one token, also the motion mask's tubelet."""
        return self.geometry.tubelet

    @property
    def grid(self) -> tuple[int, int, int]:
        """`(F, H, W)`, the token grid of `encode`."""
        return self.geometry.grid

    def prepare(self, video: torch.Tensor) -> torch.Tensor:
        """Selects and resizes the frames the teacher sees; the motion mask is computed on these same frames.

        Args:
            video (`torch.Tensor`): training clips in [-1, 1] of shape `(B, T, C, H', W')`.

        Returns:
            `torch.Tensor`: clips in [-1, 1] of shape `(B, num_frames, C, height, width)`, in `video`'s dtype.
        """
        frames = video[:, 1:] if self.input.drop_first_frame else video
        available = frames.shape[1]
        if available < self.input.num_frames:
            raise GridError(
                f"Teacher {self.name!r} needs {self.input.num_frames} frames"
                f"{' after the first' if self.input.drop_first_frame else ''}, but the clip has {video.shape[1]}; "
                f"lower `TeacherInput.num_frames` to at most {available}."
            )
        if available != self.input.num_frames:
            index = torch.linspace(0, available - 1, self.input.num_frames, device=video.device).round().long()
            frames = frames[:, index]
        batch = frames.shape[0]
        size = (self.input.height, self.input.width)
        if tuple(frames.shape[-2:]) != size:
            flat = rearrange(frames, "b t c h w -> (b t) c h w")
            flat = F.interpolate(flat.float(), size=size, mode="bicubic", align_corners=False).clamp_(-1.0, 1.0)
            frames = rearrange(flat.to(video.dtype), "(b t) c h w -> b t c h w", b=batch)
        return frames

    @torch.no_grad()
    def encode_prepared(self, frames: torch.Tensor) -> torch.Tensor:
        """Features of frames already passed through `prepare`.

        Args:
            frames (`torch.Tensor`): `(B, num_frames, C, height, width)` in [-1, 1].

        Returns:
            `torch.Tensor`: last-block features of shape `(B, F, H, W, C)` in the teacher's dtype.
        """
        param = next(self.backbone.parameters())
        pixels = (frames.to(param.device, torch.float32).add(1.0).mul(0.5) - self.mean) / self.std
        tokens = self._tokens(pixels.to(param.dtype))
        grid_f, grid_h, grid_w = self.geometry.encoded_grid
        features = rearrange(tokens, "b (f h w) c -> b f h w c", f=grid_f, h=grid_h, w=grid_w)
        pooling = self.input.frame_pooling
        if pooling == 1:
            return features
        rest = rearrange(features[:, 1:], "b (f p) h w c -> b f p h w c", p=pooling).mean(2)
        return torch.cat([features[:, :1], rest], dim=1)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Teacher features of training clips (paper Eq. 4).

        Args:
            video (`torch.Tensor`): clips in [-1, 1] of shape `(B, T, C, H', W')`.

        Returns:
            `torch.Tensor`: features of shape `(B, F, H, W, C)`, `(F, H, W) = self.grid`, `C = self.hidden_size`.
        """
        return self.encode_prepared(self.prepare(video))

    @classmethod
    def from_pretrained(cls, name_or_path: str, input: TeacherInput, **kwargs) -> VideoTeacher:
        """Loads the teacher's backbone with `transformers.<backbone_class>.from_pretrained(name_or_path, **kwargs)`
        and sets it up for `input`.

        Args:
            name_or_path (`str`): a transformers checkpoint (Hub name or folder) of the teacher's family.
            input (`TeacherInput`): frames and size the teacher sees.
            **kwargs: passed to `from_pretrained` (`config`, `revision`, `cache_dir`, `trust_remote_code`).

        Raises:
            `CheckpointError`: when the checkpoint does not fill `weight_prefixes` exactly (`check_weights`), e.g. when
                it was written for another version of transformers.
        """
        import transformers

        model, loading_info = getattr(transformers, cls.backbone_class).from_pretrained(
            name_or_path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        check_weights(
            name_or_path,
            loading_info,
            reads=cls.weight_prefixes,
            fix=f"Convert or save it again with this transformers ({transformers.__version__}), or check that "
            "`name_or_path` names the checkpoint you meant.",
        )
        return cls(model, name=name_or_path, input=input)

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Last-block tokens `(B, F * H * W, C)` in `(f, h, w)` order of normalised pixels `(B, T, C, H, W)`."""
        raise NotImplementedError

    def config_dict(self) -> dict:
        """Everything that defines the teacher's output except its weights."""
        backbone = self.backbone.config.to_dict() if hasattr(self.backbone, "config") else {}
        backbone.pop("_name_or_path", None)  # where the files were cached, not what they hold
        return {
            "class": type(self).__name__,
            "name": self.name,
            "input": asdict(self.input),
            "tubelet": self.tubelet,
            "hidden_size": self.hidden_size,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "backbone": backbone,
        }

    def fingerprint(self) -> str:
        """SHA-256 of the teacher's settings and of the bytes of every weight in their current dtype."""
        digest = hashlib.sha256(json.dumps(self.config_dict(), sort_keys=True, default=str).encode())
        for key, tensor in sorted(self.backbone.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
