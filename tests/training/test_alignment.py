"""`Alignment` and `AlignedTransformer` on a tiny CogVideoX: on and off, precomputed and online targets, the
projector's save/load, and how library errors come back as flag errors."""

import pytest
import torch
from diffusers import CogVideoXPipeline

from diffusers_tsa import (
    CREPAOptions,
    GridError,
    MTSAOptions,
    NoOptions,
    TSAOptions,
    UsageError,
    crepa_loss,
    motion_saliency_mask,
    repa_loss,
    trd_loss,
    tsa_loss,
)
from diffusers_tsa.adapters import ADAPTERS, load_spec
from diffusers_tsa.cli import translate
from diffusers_tsa.data import ClipSpec, load_video_dataset
from diffusers_tsa.features import FEATURES_COLUMN, TeacherFeatures
from diffusers_tsa.teachers import TeacherInput, teacher_config, teacher_geometry
from diffusers_tsa.testing import tiny_cogvideox_components, tiny_videomae, write_test_dataset
from diffusers_tsa.training import (
    AlignedTransformer,
    Alignment,
    AlignmentConfig,
    TrainingClips,
    alignment_loss,
    collate_examples,
)


CLIP = ClipSpec(height=96, width=144, max_num_frames=9)
STUDENT_GRID, TEACHER_GRID = (3, 6, 9), (4, 2, 3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("alignment")
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(root / "base")
    tiny_videomae().save_pretrained(root / "teacher")
    write_test_dataset(root / "data", num_clips=2)
    return root


@pytest.fixture
def adapter(tiny):
    spec = load_spec(tiny / "base")
    return ADAPTERS[spec.family].from_pretrained(spec)


def config(tiny, *, loss="m-tsa", online=True, **kwargs):
    name = str(tiny / "teacher")
    geometry = teacher_geometry(name, TeacherInput.for_clip(9, 96, 144), teacher_config(name)) if online else None
    kwargs = {"projector_hidden_dim": 16, **kwargs}
    return AlignmentConfig(
        loss=loss,
        depth=1,
        student_grid=STUDENT_GRID,
        student_width=32,
        teacher_grid=TEACHER_GRID,
        teacher_width=32,
        teacher=geometry,
        features_column=None if online else FEATURES_COLUMN,
        **kwargs,
    )


def batch_of(table, **kwargs):
    clips = TrainingClips(table, CLIP, **kwargs)
    return collate_examples([clips[i] for i in range(len(clips))])


def test_alignment_off_and_on_give_the_same_diffusion_loss(tiny, adapter):
    latents = adapter.encode_videos(torch.rand(2, 9, 3, 96, 144) * 2 - 1)
    conditioning = adapter.encode_prompts(["a ball", "a white square"])
    torch.manual_seed(1)
    plain, student = AlignedTransformer(adapter)(latents, conditioning)
    assert student is None and set(plain) == {"diffusion"}
    torch.manual_seed(1)
    expected = adapter.diffusion_loss(adapter.transformer, latents, conditioning)["diffusion"]
    assert torch.equal(plain["diffusion"], expected)

    alignment = Alignment.build(config(tiny), adapter)
    model = AlignedTransformer(adapter, alignment)
    assert {name for name, _ in model.named_children()} == {"transformer", "projector"}  # no teacher weights inside
    torch.manual_seed(1)
    terms, student = model(latents, conditioning)
    assert torch.equal(terms["diffusion"], expected)  # the hook changes nothing in the diffusion forward
    assert student.shape == (2, *TEACHER_GRID, 32) and student.requires_grad


def test_precomputed_and_online_targets_give_the_same_loss(tiny, adapter):
    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    online = Alignment.build(config(tiny), adapter)
    stored = TeacherFeatures(online.teacher, CLIP).map(table, batch_size=2, load_from_cache_file=False)
    precomputed = Alignment(config(tiny, online=False), online.projector, online.extractor)

    student = torch.randn(2, *TEACHER_GRID, 32, requires_grad=True)
    batch = batch_of(table)
    loss_online = online.loss(student, batch)
    loss_precomputed = precomputed.loss(student, batch_of(stored, features_column=FEATURES_COLUMN))
    torch.testing.assert_close(loss_precomputed, loss_online, rtol=2e-3, atol=1e-5)  # float16 storage

    # Both equal the paper's loss computed from the library's pieces: teacher features and the motion mask (Eq. 13).
    frames = online.teacher.prepare(batch["videos"])
    mask = motion_saliency_mask(frames, tubelet=online.teacher.tubelet, ratio=0.2)
    expected = tsa_loss(student, online.teacher.encode_prepared(frames), tau=0.1, query_mask=mask)
    torch.testing.assert_close(loss_online, expected)
    assert online.targets(batch)[1].sum() == 2 * 4 * 1  # 20 % of 6 tokens: one query per frame


def test_unmasked_losses_get_no_mask_and_the_temperature_is_used(tiny, adapter):
    student = torch.randn(1, *TEACHER_GRID, 32)
    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    batch = batch_of(table.select([0]))
    tsa = Alignment.build(config(tiny, loss="tsa", options=TSAOptions(temperature=0.5)), adapter)
    features, mask = tsa.targets(batch)
    assert mask is None
    torch.testing.assert_close(tsa.loss(student, batch), tsa_loss(student, features, tau=0.5))
    settings = {"crepa_adjacent_distance": 2, "crepa_temporal_decay": 0.5, "crepa_cumulative_neighbors": True}
    crepa = Alignment.build(config(tiny, loss="crepa", options=CREPAOptions(**settings)), adapter)
    expected = crepa_loss(student, features, adjacent_distance=2, temporal_decay=0.5, cumulative_neighbors=True)
    torch.testing.assert_close(crepa.loss(student, batch), expected)


def test_projector_saves_and_loads_beside_the_weights_and_refuses_another_shape(tiny, adapter, tmp_path):
    alignment = Alignment.build(config(tiny), adapter)
    alignment.save_projector(tmp_path)
    assert {p.name for p in (tmp_path / "alignment_projector").iterdir()} == {
        "config.json",
        "diffusion_pytorch_model.safetensors",
    }
    other = Alignment.build(config(tiny), adapter)
    assert not all(torch.equal(a, b) for a, b in zip(other.projector.parameters(), alignment.projector.parameters()))
    other.load_projector(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(other.projector.parameters(), alignment.projector.parameters()))
    wider = Alignment.build(config(tiny, projector_hidden_dim=8), adapter)
    with pytest.raises(UsageError, match=r"made for hidden_dim=16, this run needs hidden_dim=8"):
        wider.load_projector(tmp_path)


def test_the_aligned_transformer_gives_its_parameter_groups_and_saves_and_resumes_what_trains(tiny, tmp_path):
    def aligned(alignment=True):
        spec = load_spec(tiny / "base")
        adapter = ADAPTERS[spec.family].from_pretrained(spec)
        adapter.add_lora(4, 4)
        return AlignedTransformer(adapter, Alignment.build(config(tiny), adapter) if alignment else None)

    model = aligned()
    groups = model.parameter_groups(1e-4, 1e-3)
    trainable = [p for p in model.transformer.parameters() if p.requires_grad]
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    assert groups[0]["params"] == trainable and groups[1]["params"] == list(model.projector.parameters())
    assert [g["lr"] for g in model.parameter_groups(1e-4)] == [1e-4, 1e-4]
    assert len(aligned(alignment=False).parameter_groups(1e-4, 1e-3)) == 1  # no projector without alignment
    with torch.no_grad():
        for p in [*trainable, *model.projector.parameters()]:
            p.add_(torch.randn_like(p))
    model.save_trained(tmp_path)
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file() and (tmp_path / "alignment_projector").is_dir()
    resumed = aligned()
    resumed.load_trained(tmp_path)
    trained = dict(model.named_parameters())
    assert all(torch.equal(p, trained[name]) for name, p in resumed.named_parameters() if p.requires_grad)
    assert all(p.dtype == torch.float32 for p in resumed.parameters() if p.requires_grad)


def test_bad_settings_are_refused_naming_the_argument(tiny):
    with pytest.raises(UsageError, match=r"`temperature=-1` must be positive; `mask_ratio=0` must be in \(0, 1\]"):
        config(tiny, options=MTSAOptions(mask_ratio=0, temperature=-1))
    with pytest.raises(UsageError, match=r"`crepa_adjacent_distance=-1` must be >= 0; `crepa_temporal_decay=0` must"):
        config(tiny, loss="crepa", options=CREPAOptions(crepa_adjacent_distance=-1, crepa_temporal_decay=0))
    with pytest.raises(
        UsageError, match=r"`options=TSAOptions\(temperature=0.1\)` must be `MTSAOptions` for `loss='m"
    ):
        config(tiny, options=TSAOptions())
    assert config(tiny, loss="crepa").options == CREPAOptions()  # no options: the loss's defaults
    with pytest.raises(GridError, match="projector cannot reach the teacher grid: .* on F"):
        AlignmentConfig(
            loss="tsa", depth=1, student_grid=(3, 6, 9), student_width=32, teacher_grid=(3, 4, 3), teacher_width=32
        )


def test_library_errors_come_back_naming_the_flags():
    assert translate("`depth=3` is out of range [1, 2]") == "--alignment_depth=3 is out of range [1, 2]"
    assert translate("`TeacherInput.height=40` is not a multiple") == "--teacher_height=40 is not a multiple"
    assert translate("use `TeacherInput.num_frames` or `ClipSpec.reshape_mode='stretch'`") == (
        "use --teacher_num_frames or --video_reshape_mode='stretch'"
    )
    assert translate("run `python -m diffusers_tsa.features`") == "run `python -m diffusers_tsa.features`"
    assert translate("`num_frames=21`", {"num_frames": "--num_frames"}) == "--num_frames=21"


def test_each_alignment_loss_is_the_library_function():
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 3, 2, 3, 8, generator=g), torch.randn(2, 3, 2, 3, 8, generator=g)
    mask = torch.rand(2, 3, 2, 3, generator=g) < 0.3
    mask[:, 0, 0, 0] = True
    expected = {
        "m-tsa": tsa_loss(student, teacher, tau=0.3, query_mask=mask),
        "tsa": tsa_loss(student, teacher, tau=0.3),
        "trd": trd_loss(student, teacher),
        "repa": repa_loss(student, teacher),
        "crepa": crepa_loss(student, teacher, adjacent_distance=2, temporal_decay=0.5),
    }
    options = {
        "m-tsa": MTSAOptions(temperature=0.3),
        "tsa": TSAOptions(temperature=0.3),
        "trd": NoOptions(),
        "repa": NoOptions(),
        "crepa": CREPAOptions(crepa_adjacent_distance=2, crepa_temporal_decay=0.5),
    }
    for name, value in expected.items():
        computed = alignment_loss(name, student, teacher, motion_mask=mask, options=options[name])
        torch.testing.assert_close(computed, value)
    assert len({round(v.item(), 6) for v in expected.values()}) == 5  # the mask and the loss each matter here
    torch.testing.assert_close(alignment_loss("tsa", student, teacher), tsa_loss(student, teacher))  # defaults
    with pytest.raises(UsageError, match=r"`loss='m-tsa'` needs motion masks"):
        alignment_loss("m-tsa", student, teacher)
    with pytest.raises(UsageError, match=r"`loss='l2'` is not an alignment loss; choose one of \('m-tsa', 'tsa'"):
        alignment_loss("l2", student, teacher)


def test_latent_frame_0_is_dropped_exactly_when_the_teacher_skips_pixel_frame_0(tiny):
    """9 frames: 3 latent frames, the first encoding pixel frame 0 alone. A teacher of 6 frames after frame 0 gives
    3 tubelets, which counts alone would pair with all 3 latent frames, latent frame 0 included: refused."""
    name = str(tiny / "teacher")
    config_of = teacher_config(name)
    skipping = teacher_geometry(name, TeacherInput(6, 32, 48, drop_first_frame=True), config_of)
    with pytest.raises(GridError, match=r"2 latent frames after the first: `TeacherInput.num_frames` 4 or 8 pairs"):
        AlignmentConfig(
            loss="tsa",
            depth=1,
            student_grid=(3, 6, 9),
            student_width=32,
            teacher_grid=skipping.grid,
            teacher_width=32,
            teacher=skipping,
        )
    seeing_all = teacher_geometry(name, TeacherInput(6, 32, 48, drop_first_frame=False), config_of)
    config = AlignmentConfig(
        loss="tsa",
        depth=1,
        student_grid=(3, 6, 9),
        student_width=32,
        teacher_grid=seeing_all.grid,
        teacher_width=32,
        teacher=seeing_all,
        drop_first_frame=False,
    )
    assert config.teacher_grid == (3, 2, 3)
