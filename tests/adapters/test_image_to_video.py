"""The image-to-video seam: which checkpoints take `image_to_video`, how `first_frame_conditioning_p` is filled
in and refused, and which pipeline class and `_class_name`s an I2V run reads (`ModelSpec.tasks`, `check_task`)."""

import pytest

from diffusers_tsa.adapters import TrainingOptions
from diffusers_tsa.adapters.cogvideox import CogVideoXSpec
from diffusers_tsa.errors import ModelLayoutError


BASE = {"pretrained_model_name_or_path": "ckpt", "num_blocks": 2, "hidden_size": 64, "min_depth": 1}
T2V, I2V, BOTH = frozenset({"t2v"}), frozenset({"i2v"}), frozenset({"t2v", "i2v"})


def spec(tasks: frozenset[str]) -> CogVideoXSpec:
    return CogVideoXSpec(**BASE, tasks=tasks)


def test_text_to_video_runs_are_unchanged():
    options = spec(T2V).for_training(TrainingOptions()).options
    assert options == TrainingOptions(max_sequence_length=226)  # nothing I2V filled in


@pytest.mark.parametrize(
    ("tasks", "image_to_video", "flag"),
    [(T2V, True, "--image_to_video"), (I2V, False, "pass --image_to_video")],
)
def test_a_task_the_checkpoint_lacks_is_refused(tasks, image_to_video, flag):
    with pytest.raises(ModelLayoutError, match=flag):
        spec(tasks).for_training(TrainingOptions(image_to_video=image_to_video))


@pytest.mark.parametrize(
    ("tasks", "p", "expected"),
    [
        (I2V, None, 1.0),
        (I2V, 1.0, 1.0),
        (BOTH, None, CogVideoXSpec.default_first_frame_conditioning_p),
        (BOTH, 0.3, 0.3),
    ],
)
def test_first_frame_conditioning_p_is_filled_in(tasks, p, expected):
    options = TrainingOptions(image_to_video=True, first_frame_conditioning_p=p)
    assert spec(tasks).for_training(options).options.first_frame_conditioning_p == expected


@pytest.mark.parametrize(
    ("tasks", "options", "match"),
    [
        (I2V, TrainingOptions(image_to_video=True, first_frame_conditioning_p=0.5), "always given its first frame"),
        (BOTH, TrainingOptions(image_to_video=True, first_frame_conditioning_p=1.5), r"in \[0, 1\]"),
        (BOTH, TrainingOptions(first_frame_conditioning_p=0.5), "pass --image_to_video"),
    ],
)
def test_bad_first_frame_conditioning_p_is_refused(tasks, options, match):
    with pytest.raises(ModelLayoutError, match=match):
        spec(tasks).for_training(options)


def test_read_tasks_follows_the_image_to_video_class_names():
    class I2VSpec(CogVideoXSpec):
        image_to_video_pipeline_class_name = "CogVideoXImageToVideoPipeline"

    assert I2VSpec.read_tasks({"_class_name": "CogVideoXImageToVideoPipeline"}, {}) == I2V
    assert I2VSpec.read_tasks({"_class_name": "CogVideoXPipeline"}, {}) == T2V
    i2v = I2VSpec(**BASE, tasks=I2V).for_training(TrainingOptions(image_to_video=True))
    assert i2v.image_to_video and i2v.pipeline_class.__name__ == "CogVideoXImageToVideoPipeline"
    assert I2VSpec(**BASE).pipeline_class.__name__ == "CogVideoXPipeline"


def test_the_card_code_of_an_image_to_video_run_passes_a_first_frame():
    from diffusers_tsa.adapters import GenerationSettings
    from diffusers_tsa.training.card_code import usage_code

    class I2VSpec(CogVideoXSpec):
        image_to_video_pipeline_class_name = "CogVideoXImageToVideoPipeline"

    settings = GenerationSettings(num_frames=9, height=16, width=16)
    i2v = I2VSpec(**BASE, tasks=I2V).for_training(TrainingOptions(image_to_video=True))
    code = usage_code(i2v, "out", "lora", "a cat", settings)
    assert "from diffusers.utils import export_to_video, load_image" in code
    assert "pipe = CogVideoXImageToVideoPipeline.from_pretrained(" in code
    assert "    image=image," in code.splitlines()[code.splitlines().index("video = pipe(") + 2]
    compile(code, "card", "exec")
    t2v = usage_code(CogVideoXSpec(**BASE).for_training(TrainingOptions()), "out", "lora", "a cat", settings)
    assert "image" not in t2v and "CogVideoXPipeline.from_pretrained(" in t2v
