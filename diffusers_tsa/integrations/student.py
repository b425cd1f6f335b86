"""The student as another trainer holds it: a bare diffusers transformer (and its VAE), already loaded."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..adapters import ADAPTERS
from ..adapters.spec import ModelSpec
from ..errors import ModelLayoutError
from ..hooks import unwrap_model


Grid = tuple[int, int, int]


def student_spec(
    transformer: nn.Module, vae: nn.Module | None = None, *, model_index: dict | None = None
) -> ModelSpec:
    """The `ModelSpec` of a transformer already loaded (possibly wrapped by PEFT, DDP or `torch.compile`), its family
    found from its class, its configs read from the modules (no file, no weight).

    Args:
        transformer (`torch.nn.Module`): a diffusers transformer of a supported family (`CogVideoXTransformer3DModel`,
            `WanTransformer3DModel`, `LTXVideoTransformer3DModel`).
        vae (`torch.nn.Module`, *optional*): its VAE, whose config gives the compression (needed for Wan, whose two
            VAEs compress differently; the family's usual VAE otherwise).
        model_index (`dict`, *optional*): the pipeline's `model_index.json`, for what only it says (Wan 2.2's experts).

    Raises:
        `ModelLayoutError`: for a transformer of no supported family.
    """
    base = unwrap_model(transformer)
    name = type(base).__name__
    found = [a.spec_class for a in ADAPTERS.values() if a.spec_class.transformer_class_name == name]
    if not found:
        known = sorted(
            a.spec_class.transformer_class_name for a in ADAPTERS.values() if a.spec_class.transformer_class_name
        )
        raise ModelLayoutError(f"`transformer` is a {name}; the supported diffusers transformers are {known}.")
    config = dict(base.config)
    vae_config = None if vae is None else dict(unwrap_model(vae).config)
    return found[0].from_model_configs(config.get("_name_or_path") or name, config, vae_config, model_index or {})


@dataclass(frozen=True)
class StudentGeometry:
    """What the alignment needs to know of the student for clips of one size.

    Attributes:
        family (`str`): the model family (`"cogvideox"`, `"wan"`, `"ltx_video"`).
        grid (`tuple[int, int, int]`): the hooked block's video token grid (F, H, W).
        hidden_size (`int`): the hooked block's width (the projector's input).
        num_blocks (`int`): blocks an alignment `depth` counts.
        default_depth (`int`): the family's default block (the paper's share of the blocks).
    """

    family: str
    grid: Grid
    hidden_size: int
    num_blocks: int
    default_depth: int


def student_geometry(
    transformer: nn.Module, num_frames: int, height: int, width: int, *, vae: nn.Module | None = None
) -> StudentGeometry:
    """The token grid and width of a loaded transformer for clips of `num_frames x height x width` pixels
    (`student_spec`; the clip size is checked against the family's rules).

    Raises:
        `GridError`: for a clip size the model cannot take, naming sizes that work.
    """
    spec = student_spec(transformer, vae)
    spec.check_clip(num_frames, height, width)
    return StudentGeometry(
        family=spec.family,
        grid=spec.token_grid(num_frames, height, width),
        hidden_size=spec.hidden_size,
        num_blocks=spec.num_blocks,
        default_depth=spec.default_depth,
    )
