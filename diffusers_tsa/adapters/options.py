"""The small value types a family's spec and adapter take: how a run trains (`TrainingOptions`) and how videos are
generated (`GenerationSettings`)."""

from __future__ import annotations

from dataclasses import dataclass

from .flow_matching import FlowMatching


@dataclass(frozen=True)
class TrainingOptions:
    """A family's training choices beyond the loop's (`ModelSpec.check_options` refuses those it has not).

    Args:
        max_sequence_length (`int`, *optional*): text tokens per prompt; `None` is the family's pipeline default,
            which `ModelSpec.for_training` fills in.
        flow_matching (`FlowMatching`): how flow-matching families (Wan, LTX-Video) draw and weight noise levels.
        expert (`str`, *optional*): the expert that trains in a two-expert checkpoint (Wan 2.2 A14B).
        image_to_video (`bool`, defaults to `False`): trains the checkpoint's image-to-video task, conditioned on each
            clip's first frame (`ModelSpec.check_task` refuses a checkpoint without it, or with only it when off).
        first_frame_conditioning_p (`float`, *optional*): the share of training samples conditioned on their first
            frame, for checkpoints that train text- and image-to-video in one (LTX-Video, LTX-2, Wan 2.2 TI2V-5B);
            `None` is the family's default (`ModelSpec.for_training`); checkpoints whose I2V task always takes an
            image use 1.0 and refuse other values.
    """

    max_sequence_length: int | None = None
    flow_matching: FlowMatching = FlowMatching()
    expert: str | None = None
    image_to_video: bool = False
    first_frame_conditioning_p: float | None = None


@dataclass(frozen=True)
class GenerationSettings:
    """How validation and evaluation videos are generated.

    Args:
        num_frames (`int`): frames per video.
        height (`int`): height in pixels.
        width (`int`): width in pixels.
        num_inference_steps (`int`, defaults to 50): denoising steps.
        guidance_scale (`float`, defaults to 6.0): classifier-free guidance.
        use_dynamic_cfg (`bool`, *optional*): CogVideoX's cosine dynamic guidance; `None` is the family's sampling
            default (on for CogVideoX, as the paper and VideoREPA sample).
        max_sequence_length (`int`, *optional*): text tokens; `None` is the model's own
            (`ModelSpec.default_max_sequence_length`: 226 for CogVideoX).
    """

    num_frames: int
    height: int
    width: int
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    use_dynamic_cfg: bool | None = None
    max_sequence_length: int | None = None
