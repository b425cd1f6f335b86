"""`diffusers_tsa.integrations`: the alignment term in loops that are not ours, on tiny models: the student's geometry
from a bare transformer, the projector riding along with the host's transformer (optimizer, state dicts, stock saving,
accelerate's hooks beside the host's), the teacher targets from clips, latents and a precomputed table equal to the
training script's, and DDP (the recipes' loops are `test_integration_recipes.py`)."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel, LTXPipeline, WanPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from test_train_script import accelerate_launch

from diffusers_tsa import BlockFeatureExtractor, tsa_loss
from diffusers_tsa.adapters import load_spec
from diffusers_tsa.data import ClipSpec, load_video_dataset, read_video
from diffusers_tsa.errors import ModelLayoutError, UsageError
from diffusers_tsa.features import FEATURES_COLUMN, TeacherFeatures, teacher_targets
from diffusers_tsa.integrations import PROJECTOR_ATTRIBUTE, HostAlignment, student_geometry
from diffusers_tsa.teachers import TeacherInput, load_teacher
from diffusers_tsa.testing import tiny_cogvideox_components, tiny_videomae, write_test_dataset
from diffusers_tsa.testing.ltx_video import (
    TINY_LTX_HEIGHT,
    TINY_LTX_NUM_FRAMES,
    TINY_LTX_WIDTH,
    tiny_ltx_video_components,
)
from diffusers_tsa.testing.wan import tiny_wan_components
from diffusers_tsa.training import TrainingClips, collate_examples


CLIP = ClipSpec(height=96, width=144, max_num_frames=9)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrations")
    tiny_videomae().save_pretrained(root / "teacher")
    write_test_dataset(root / "data", num_clips=2)
    return root


def attached(tiny, components=None, **kwargs):
    components = components or tiny_cogvideox_components()
    transformer = components["transformer"]
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    alignment = HostAlignment.attach(
        transformer,
        teacher=tiny / "teacher",
        num_frames=9,
        height=96,
        width=144,
        depth=1,
        projector_hidden_dim=16,
        vae=components["vae"],
        **kwargs,
    )
    return components, alignment


def training_forward(transformer, latents):
    transformer.train()
    embeds = torch.randn(latents.shape[0], 16, 32)
    return transformer(hidden_states=latents, encoder_hidden_states=embeds, timestep=torch.tensor([10] * len(latents)))


# --- The student from a bare transformer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pipeline, components, size",
    [
        (CogVideoXPipeline, tiny_cogvideox_components, (9, 96, 144)),
        (WanPipeline, tiny_wan_components, (9, 64, 96)),
        (LTXPipeline, tiny_ltx_video_components, (TINY_LTX_NUM_FRAMES, TINY_LTX_HEIGHT, TINY_LTX_WIDTH)),
    ],
)
def test_the_student_geometry_of_a_bare_transformer_is_the_checkpoints(tmp_path, pipeline, components, size):
    parts = components()
    pipeline(**parts).save_pretrained(tmp_path / "base")
    spec = load_spec(tmp_path / "base")
    geometry = student_geometry(parts["transformer"], *size, vae=parts["vae"])
    assert (geometry.family, geometry.grid, geometry.hidden_size) == (
        spec.family,
        spec.token_grid(*size),
        spec.hidden_size,
    )
    assert geometry.default_depth == spec.default_depth


def test_a_transformer_of_no_family_is_refused():
    with pytest.raises(ModelLayoutError, match="supported diffusers transformers"):
        student_geometry(torch.nn.Linear(2, 2), 9, 96, 144)


# --- The projector rides along with the transformer ----------------------------------------------------------------


def test_the_projector_trains_inside_the_transformer_and_stays_out_of_its_saved_weights(tiny, tmp_path):
    components, alignment = attached(tiny)
    transformer = components["transformer"]
    projector = getattr(transformer, PROJECTOR_ATTRIBUTE)
    trainable = {id(p) for p in transformer.parameters() if p.requires_grad}
    assert {id(p) for p in projector.parameters()} <= trainable  # the host's optimizer group and clipping see it
    assert not any(PROJECTOR_ATTRIBUTE in key for key in transformer.state_dict())
    assert not any(PROJECTOR_ATTRIBUTE in key for key in get_peft_model_state_dict(transformer))

    latents = torch.randn(2, 3, 4, 12, 18)
    output = training_forward(transformer, latents).sample
    loss = output.pow(2).mean() + alignment.weight * alignment.loss(latents=latents)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())
    assert alignment.logs()["loss/alignment"] > 0

    with torch.no_grad():  # inference (a validation) records nothing
        transformer.eval()(
            hidden_states=latents, encoder_hidden_states=torch.randn(2, 16, 32), timestep=torch.tensor([1, 1])
        )
    with pytest.raises(UsageError, match="after the transformer's forward"):
        alignment.loss(latents=latents)

    stock = tiny_cogvideox_components()["transformer"]
    stock.load_state_dict(transformer.state_dict(), strict=False)
    transformer.load_state_dict(stock.state_dict(), strict=False)  # a stock state dict loads: no projector missing
    result = transformer.load_state_dict({**stock.state_dict()}, strict=False)
    assert not [key for key in result.missing_keys if PROJECTOR_ATTRIBUTE in key]
    alignment.detach()
    transformer.save_pretrained(tmp_path / "full")
    reloaded = CogVideoXTransformer3DModel.from_pretrained(tmp_path / "full")
    assert not hasattr(transformer, PROJECTOR_ATTRIBUTE) and not hasattr(reloaded, PROJECTOR_ATTRIBUTE)


def test_accelerate_hooks_save_and_resume_the_projector_beside_the_hosts_own(tiny, tmp_path):
    components, alignment = attached(tiny)
    accelerator = Accelerator(cpu=True)
    transformer = components["transformer"]
    seen = []

    def host_save(models, weights, output_dir):  # as diffusers' examples: pops every weight, refuses unknown models
        for model in models:
            if not isinstance(model, CogVideoXTransformer3DModel):
                raise ValueError(f"unexpected save model: {model.__class__}")
            weights.pop()
        seen.append("saved")

    def host_load(models, input_dir):
        while models:
            models.pop()
        seen.append("loaded")

    accelerator.register_save_state_pre_hook(host_save)
    accelerator.register_load_state_pre_hook(host_load)
    alignment.register_accelerate_hooks(accelerator)
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=1e-3)
    transformer, optimizer = accelerator.prepare(transformer, optimizer)
    with accelerator.accumulate(transformer):
        latents = torch.randn(2, 3, 4, 12, 18)
        loss = training_forward(transformer, latents).sample.pow(2).mean() + alignment.loss(latents=latents)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
    saved = {k: v.clone() for k, v in alignment.projector.state_dict().items()}
    accelerator.save_state(tmp_path / "checkpoint-1")
    assert (tmp_path / "checkpoint-1" / "alignment_projector" / "config.json").is_file()
    with torch.no_grad():
        for parameter in alignment.projector.parameters():
            parameter.add_(1.0)
    accelerator.load_state(tmp_path / "checkpoint-1")
    assert seen == ["saved", "loaded"]
    for key, value in alignment.projector.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)


# --- The teacher targets are the training script's ------------------------------------------------------------------


def test_targets_from_clips_latents_and_a_precomputed_table_are_the_training_scripts(tiny):
    components, alignment = attached(tiny, components=tiny_cogvideox_components())
    teacher = load_teacher(tiny / "teacher", TeacherInput.for_clip(9, 96, 144))
    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    videos = torch.stack([read_video(path, CLIP) for path in table["video"]])
    features, mask = alignment.targets(videos=videos)
    expected_features, expected_mask = teacher_targets(teacher, videos, 0.2)
    assert torch.equal(features, expected_features) and torch.equal(mask, expected_mask)

    latents = torch.randn(2, 3, 4, 12, 18)
    pipe = CogVideoXPipeline(**components)
    decoded = pipe.decode_latents(latents).permute(0, 2, 1, 3, 4).clamp(-1, 1)  # the pipeline's own decode
    from_latents = alignment.targets(latents=latents)
    expected = teacher_targets(teacher, decoded, 0.2)
    torch.testing.assert_close(from_latents[0], expected[0]) and torch.equal(from_latents[1], expected[1])

    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    stored = TeacherFeatures(teacher, CLIP, storage_dtype="float32").map(table, batch_size=2)
    clips = TrainingClips(stored, CLIP, features_column=FEATURES_COLUMN)
    batch = collate_examples([clips[i] for i in range(2)])
    precomputed = HostAlignment.attach(
        tiny_cogvideox_components()["transformer"],
        teacher=stored,
        num_frames=9,
        height=96,
        width=144,
        depth=1,
        projector_hidden_dim=16,
    )
    stored_features, stored_mask = precomputed.targets(batch=batch)
    with pytest.raises(UsageError, match="ClipSpec.height"):  # features made from other clips are refused
        HostAlignment.attach(
            tiny_cogvideox_components()["transformer"], teacher=stored, num_frames=9, height=64, width=144, depth=1
        )
    torch.testing.assert_close(stored_features.float(), expected_features)
    assert torch.equal(stored_mask.bool(), expected_mask)


def test_masks_of_any_integer_dtype_and_a_positional_depth():
    student, teacher = torch.randn(2, 2, 2, 3, 8), torch.randn(2, 2, 2, 3, 8)
    mask = torch.zeros(2, 2, 2, 3, dtype=torch.bool)
    mask[..., 0, 0] = True
    expected = tsa_loss(student, teacher, query_mask=mask)
    for dtype in (torch.uint8, torch.int32, torch.int64):
        torch.testing.assert_close(tsa_loss(student, teacher, query_mask=mask.to(dtype)), expected)
    with pytest.raises(Exception, match="bool or integer"):
        tsa_loss(student, teacher, query_mask=mask.float())
    transformer = tiny_cogvideox_components()["transformer"]
    assert BlockFeatureExtractor(transformer, 2).block is transformer.transformer_blocks[1]


def test_teacher_input_on_the_teachers_patch_grid(tiny):
    from diffusers_tsa.teachers import teacher_config

    assert TeacherInput.for_teacher(teacher_config(tiny / "teacher"), 49, 480, 848).width % 16 == 0


@pytest.mark.slow
def test_the_projector_trains_in_sync_under_ddp_with_unused_parameter_search(tiny):
    """DDP with `find_unused_parameters=True` (diffusers' examples) sees the projector used by the forward that runs
    it, and averages its gradients: two processes on different batches end with the same projector."""
    command = [
        *accelerate_launch(processes=2, threads=1),
        str(Path(__file__).with_name("launch_host_ddp.py")),
        str(tiny / "teacher"),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "processes: 2, projector in sync: True" in done.stdout
