"""`--alignment_preset`: each baseline's values as its authors' code sets them (the upstream file and commit are cited
with each value), each value overridable by its own flag, the frames and projector the presets need, and the preset
on the plan and the card.

Upstream code read for these values (facts only, no code copied):
- SimpleTuner, github.com/bghira/SimpleTuner at commit bc8e6ab7738ce457a2ed8eb2d26cadd91c6442cb:
  `simpletuner/helpers/training/crepa.py` (`CrepaRegularizer`) and
  `simpletuner/simpletuner_sdk/server/services/field_registry/sections/loss.py` (the `crepa_*` defaults).
- VideoREPA, github.com/aHapBean/VideoREPA at commit 80026871659c262df12285fff3a2fb7ae696229e:
  `finetune/models/cogvideox_t2v_align/lora_trainer.py` (the DINOv2 and VideoMAEv2 paths),
  `finetune/models/cogvideox_t2v_align/models/cogvideox_align.py` (`build_mlp`, `align_layer`),
  `finetune/scripts/multigpu_VideoREPA_2B_sft.sh` and `finetune/schemas/args.py` (the training configuration).
"""

import importlib

import pytest
import torch
from diffusers import CogVideoXPipeline

from diffusers_tsa import ClipSpec, MTSAOptions, TeacherFeatures, TeacherInput, UsageError, load_teacher, trd_loss
from diffusers_tsa.cli import flag_errors
from diffusers_tsa.data import load_video_dataset
from diffusers_tsa.projector import AlignmentProjector
from diffusers_tsa.teachers import ImageTeacher, TeacherGeometry
from diffusers_tsa.testing import tiny_cogvideox_components, tiny_dinov2, write_test_dataset
from diffusers_tsa.training import plan_training
from diffusers_tsa.training.presets import ALIGNMENT_PRESETS


SIMPLETUNER = "bc8e6ab7738ce457a2ed8eb2d26cadd91c6442cb"
VIDEOREPA = "80026871659c262df12285fff3a2fb7ae696229e"


def script():
    return importlib.import_module("diffusers_tsa.train_text_to_video_tsa")


def test_crepa_simpletuner_is_simpletuners_defaults():
    preset = ALIGNMENT_PRESETS["crepa-simpletuner"]
    assert SIMPLETUNER in preset.source
    # field_registry/sections/loss.py: crepa_block_index default_value=8, "0-based": our depth 9.
    # field_registry/sections/loss.py and crepa.py: crepa_lambda 0.5, crepa_adjacent_distance 1,
    # crepa_adjacent_tau 1.0, crepa_cumulative_neighbors False (CrepaRegularizer.__init__).
    # crepa.py: crepa_encoder_image_size 518 (frames interpolated to 518x518 in `_encode_frames`), encoder
    # dinov2_vitg14; `_maybe_align_temporal` picks linspace(0, T_pixel - 1, T_latent) of the decoded frames: one
    # per latent frame, frame 0 included; the projector is nn.Sequential(LayerNorm, Linear) (`attach_to_model`).
    assert dict(preset.values) == {
        "alignment_loss": "crepa",
        "alignment_depth": 8 + 1,
        "alignment_weight": 0.5,
        "crepa_adjacent_distance": 1,
        "crepa_temporal_decay": 1.0,
        "crepa_cumulative_neighbors": False,
        "teacher_height": 518,
        "teacher_width": 518,
        "teacher_frames": "latent",
        "projector_head": "layernorm_linear",
    }
    assert preset.teacher == "facebook/dinov2-giant"  # dinov2_vitg14
    # One frame per latent frame at the latent positions: 0, 4, ..., 48 of a 49-frame clip (13 latent frames).
    teacher_input = TeacherInput.for_clip(49, 480, 720, teacher_height=518, teacher_width=518, frames="latent",
                                          latent_frames=13)  # fmt: skip
    assert teacher_input == TeacherInput(num_frames=13, height=518, width=518, drop_first_frame=False)
    teacher = ImageTeacher(tiny_dinov2(), name="tiny", input=teacher_input)
    video = torch.arange(49.0).view(1, 49, 1, 1, 1).expand(1, 49, 3, 14, 14) / 48 * 2 - 1
    picked = (teacher.prepare(video)[0, :, 0, 0, 0] + 1) / 2 * 48
    assert picked.round().tolist() == list(range(0, 49, 4))
    assert TeacherGeometry("g", teacher_input, 14, 1, 1536).grid == (13, 37, 37)
    # SimpleTuner's projector form: LayerNorm then Linear, no hidden layer.
    projector = AlignmentProjector(
        64, 32, student_grid=(13, 30, 45), teacher_grid=(13, 37, 37), head="layernorm_linear"
    )
    assert [type(m).__name__ for m in projector.mlp] == ["LayerNorm", "Linear"] and projector.resample is None
    assert projector(torch.randn(1, 13 * 30 * 45, 64)).shape == (1, 13, 37, 37, 32)


def test_repa_videorepa_is_videoreapas_dinov2_path():
    preset = ALIGNMENT_PRESETS["repa-videorepa"]
    assert VIDEOREPA in preset.source
    # lora_trainer.py: DINOv2 = torch.hub dinov2_vitb14; every frame bicubic to input_resolution = (420, 630);
    # x_norm_patchtokens; frame 0 kept alone, the other 48 avg_pool1d(kernel_size=4, stride=4) -> 1 + 12 = 13 frames
    # on 30x45; DINOv2 asserts loss == 'cosine_similarity' (REPA). multigpu_VideoREPA_2B_sft.sh: --align_layer 18
    # (cogvideox_align.py: `(i + 1) == self.align_layer`, 1-based), --proj_coeff 0.5; args.py: --projector_dim 2048;
    # cogvideox_align.py build_mlp: Linear-SiLU-Linear-SiLU-Linear (our "mlp" head).
    assert dict(preset.values) == {
        "alignment_loss": "repa",
        "alignment_depth": 18,
        "alignment_weight": 0.5,
        "projector_hidden_dim": 2048,
        "projector_head": "mlp",
        "teacher_height": 420,
        "teacher_width": 630,
        "teacher_frames": "pooled",
    }
    assert preset.teacher == "facebook/dinov2-base"  # dinov2_vitb14
    teacher_input = TeacherInput.for_clip(49, 480, 720, teacher_height=420, teacher_width=630, frames="pooled",
                                          latent_frames=13)  # fmt: skip
    assert teacher_input == TeacherInput(49, 420, 630, drop_first_frame=False, frame_pooling=4)
    assert TeacherGeometry("b", teacher_input, 14, 1, 768).grid == (13, 30, 45)  # the student's grid
    # The pooling is VideoREPA's: frame 0 alone, then the mean of each 4 frames' features.
    small = TeacherInput(num_frames=9, height=28, width=42, drop_first_frame=False, frame_pooling=4)
    teacher = ImageTeacher(tiny_dinov2(), name="tiny", input=small)
    video = torch.rand(1, 9, 3, 28, 42, generator=torch.Generator().manual_seed(0)) * 2 - 1
    frames = [ImageTeacher(teacher.backbone, name="tiny", input=TeacherInput(1, 28, 42, False)).encode(video[:, [i]])
              for i in range(9)]  # fmt: skip
    expected = torch.cat([frames[0], torch.cat(frames[1:5]).mean(0, True), torch.cat(frames[5:]).mean(0, True)], 1)
    torch.testing.assert_close(teacher.encode(video), expected)


def test_trd_videorepa_and_the_papers_m_tsa():
    trd = ALIGNMENT_PRESETS["trd-videorepa"]
    assert VIDEOREPA in trd.source
    # multigpu_VideoREPA_2B_sft.sh: --loss token_relation_distillation, --align_layer 18, --proj_coeff 0.5,
    # --margin 0.1 (our trd_loss's default margin); args.py: --projector_dim 2048; lora_trainer.py (VideoMAEv2):
    # raw_frames[:, :, 1:] bicubic to (H // 3, W // 3): our 'uniform' frames, the paper's rule.
    assert dict(trd.values) == {
        "alignment_loss": "trd",
        "alignment_depth": 18,
        "alignment_weight": 0.5,
        "projector_hidden_dim": 2048,
        "projector_head": "mlp",
        "teacher_frames": "uniform",
    }
    import inspect

    assert inspect.signature(trd_loss).parameters["margin"].default == 0.1
    assert TeacherInput.for_clip(49, 480, 720) == TeacherInput(48, 160, 240, drop_first_frame=True)
    # The paper (Eq. 8, 12, 14): tau 0.1, k = 0.2, lambda 0.5; the library's defaults.
    m_tsa = ALIGNMENT_PRESETS["m-tsa-paper"]
    assert m_tsa.values["tsa_temperature"] == MTSAOptions().temperature == 0.1
    assert m_tsa.values["tsa_mask_ratio"] == MTSAOptions().mask_ratio == 0.2
    assert m_tsa.values["alignment_weight"] == 0.5 and m_tsa.values["alignment_loss"] == "m-tsa"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(root / "base")
    tiny_dinov2().save_pretrained(root / "dinov2")
    write_test_dataset(root / "data", num_clips=2)
    return root


def flags(tiny, *more):
    return [
        "--pretrained_model_name_or_path",
        str(tiny / "base"),
        "--instance_data_root",
        str(tiny / "data"),
        "--caption_column",
        "prompts.txt",
        "--video_column",
        "videos.txt",
        "--height",
        "96",
        "--width",
        "144",
        "--max_num_frames",
        "9",
        "--output_dir",
        str(tiny / "out"),
        *more,
    ]


@pytest.mark.parametrize("name", list(ALIGNMENT_PRESETS))
def test_a_preset_sets_its_flags_and_each_given_flag_wins(tiny, name):
    train = script()
    preset = ALIGNMENT_PRESETS[name]
    args = train.parse_args(flags(tiny, "--alignment_preset", name))
    assert all(getattr(args, dest) == value for dest, value in preset.values.items())
    assert preset.overridden(args) == {}
    given = train.parse_args(flags(tiny, "--alignment_preset", name, "--alignment_weight", "0.2"))
    assert given.alignment_weight == 0.2 and preset.overridden(given) == {"alignment_weight": 0.2}
    assert "overridden: --alignment_weight 0.2" in preset.summary(given)
    card = importlib.import_module("diffusers_tsa.train_loop").card_hyperparameters(
        given, type("Spec", (), {"uses_flow_matching": False}), {}
    )
    assert card["alignment_preset"] == name and card["alignment_weight"] == 0.2


def test_the_crepa_preset_plans_simpletuners_teacher_input_and_projector(tiny):
    args = script().parse_args(
        flags(
            tiny,
            "--alignment_preset",
            "crepa-simpletuner",
            "--teacher",
            str(tiny / "dinov2"),
            "--alignment_depth",
            "1",
        )
    )
    plan = plan_training(args)
    assert plan.preset is ALIGNMENT_PRESETS["crepa-simpletuner"]
    config = plan.alignment
    assert config.teacher.input == TeacherInput(num_frames=3, height=518, width=518, drop_first_frame=False)
    assert config.teacher_grid == (3, 37, 37) and config.student_grid == (3, 6, 9) and not config.drop_first_frame
    assert config.projector_head == "layernorm_linear" and config.loss == "crepa"


def test_the_students_own_block_plans_without_a_teacher(tiny):
    args = script().parse_args(
        flags(tiny, "--alignment_loss", "tsa", "--alignment_depth", "1", "--alignment_target_depth", "2")
    )
    plan = plan_training(args)
    config = plan.alignment
    assert config.target_depth == 2 and config.teacher is None and config.features_column is None
    assert config.teacher_grid == config.student_grid and config.teacher_width == config.student_width


def test_precomputed_features_must_have_been_made_with_the_same_teacher_frames(tiny, tmp_path):
    clip = ClipSpec(height=96, width=144, max_num_frames=9)
    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    latent = TeacherInput.for_clip(9, 96, 144, patch_size=14, frames="latent", latent_frames=3)
    teacher = load_teacher(tiny / "dinov2", latent)
    TeacherFeatures(teacher, clip).map(table, batch_size=2).save_to_disk(tmp_path / "latent")
    data = ["--dataset_name", str(tmp_path / "latent"), "--caption_column", "caption", "--video_column", "video"]
    train = script()
    base = flags(tiny, "--alignment_loss", "repa", "--alignment_depth", "1")
    at = base.index("--instance_data_root")
    del base[at : at + 2]
    plan = plan_training(train.parse_args([*base, *data, "--teacher_frames", "latent"]))
    assert plan.alignment.teacher_grid == (3, 2, 3) and not plan.alignment.drop_first_frame
    with pytest.raises(UsageError) as bad, flag_errors():
        plan_training(train.parse_args([*base, *data, "--teacher_frames", "pooled"]))
    assert (
        "made with --teacher_num_frames=3, --teacher_frames=1, but training is given --teacher_num_frames=9, "
        "--teacher_frames=4" in str(bad.value)
    )
