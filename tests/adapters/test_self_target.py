"""The teacher-free target: the student's own deeper block, without gradient, on the student's grid, for every loss,
with no teacher and no pixels, on each family's tiny model."""

import argparse
import re

import pytest
import torch
from diffusers import CogVideoXPipeline, LTXPipeline, WanPipeline
from test_nova_adapter import nova, seeded  # noqa: F401 (the tiny NOVA checkpoint)

from diffusers_tsa import ALIGNMENT_LOSSES, UsageError
from diffusers_tsa.adapters import ADAPTERS, TrainingOptions, load_spec
from diffusers_tsa.cli import add_alignment_arguments, translate
from diffusers_tsa.testing import tiny_cogvideox_components
from diffusers_tsa.testing.ltx_video import (
    TINY_LTX_HEIGHT,
    TINY_LTX_NUM_FRAMES,
    TINY_LTX_WIDTH,
    tiny_ltx_video_components,
)
from diffusers_tsa.testing.wan import tiny_wan_components
from diffusers_tsa.training import AlignedTransformer, Alignment, AlignmentConfig


FAMILIES = {
    "cogvideox": (CogVideoXPipeline, tiny_cogvideox_components, (9, 96, 144)),
    "wan": (WanPipeline, tiny_wan_components, (9, 64, 96)),
    "ltx-video": (LTXPipeline, tiny_ltx_video_components, (TINY_LTX_NUM_FRAMES, TINY_LTX_HEIGHT, TINY_LTX_WIDTH)),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    pipeline, components, size = FAMILIES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    pipeline(**components()).save_pretrained(root)
    spec = load_spec(root)
    return spec, size


def self_aligned(spec, size, loss):
    adapter = ADAPTERS[spec.family].from_pretrained(spec, options=TrainingOptions(max_sequence_length=16))
    adapter.add_lora(4, 4)
    grid = spec.token_grid(*size)
    config = AlignmentConfig(
        loss=loss,
        depth=1,
        student_grid=grid,
        student_width=spec.hidden_size,
        teacher_grid=grid,
        teacher_width=spec.hidden_size,
        projector_hidden_dim=16,
        target_depth=2,
        drop_first_frame=False,
    )
    return adapter, Alignment.build(config, adapter)


@pytest.mark.parametrize("loss", list(ALIGNMENT_LOSSES))
def test_each_loss_aligns_to_the_students_deeper_block_without_a_teacher(family, loss):
    spec, size = family
    adapter, alignment = self_aligned(spec, size, loss)
    assert alignment.teacher is None and alignment.config.teacher is None  # nothing loaded but the student
    model = AlignedTransformer(adapter, alignment)
    video = torch.rand(2, size[0], 3, size[1], size[2], generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = adapter.encode_videos(video)
    conditioning = adapter.encode_prompts(["a ball", "a white square"])
    torch.manual_seed(1)
    terms, student = model(latents, conditioning)
    target = alignment.student_target
    grid = spec.token_grid(*size)
    assert student.shape == target.shape == (2, *grid, spec.hidden_size)  # the student's grid and width
    assert not target.requires_grad  # stop-gradient

    # The target is the output of block 2 of the same forward.
    with torch.no_grad(), adapter.feature_extractor(adapter.transformer, 2) as block_2, block_2.capture() as seen:
        torch.manual_seed(1)
        adapter.diffusion_loss(adapter.transformer, latents, conditioning)
    torch.testing.assert_close(target, adapter.alignment_tokens(seen.hidden_states, 2).reshape(target.shape))

    # The loss needs no pixels (an empty batch); its gradient reaches the projector and block 1, not block 2.
    align = alignment.loss(student, {})
    assert torch.isfinite(align)
    align.backward()
    assert all(p.grad is not None for p in alignment.projector.parameters())
    lora = {name: p.grad for name, p in adapter.transformer.named_parameters() if "lora_B" in name}
    first, second = ([g for n, g in lora.items() if re.match(rf"(transformer_)?blocks\.{b}\.", n)] for b in (0, 1))
    assert first and second
    assert any(g is not None and g.abs().sum() > 0 for g in first)
    assert all(g is None or not g.any() for g in second)


def test_the_target_block_must_be_deeper_and_takes_no_teacher():
    with pytest.raises(UsageError) as bad:
        AlignmentConfig("repa", 2, (2, 2, 2), 8, (2, 2, 2), 8, target_depth=2, features_column="teacher_features")
    message = translate(str(bad.value))
    assert "--alignment_target_depth=2 must be deeper than --alignment_depth=2" in message
    assert "--alignment_target_depth=2 aligns to the student: it takes no teacher" in message
    parser = argparse.ArgumentParser()
    add_alignment_arguments(parser)
    assert parser.parse_args(["--alignment_target_depth", "3"]).alignment_target_depth == 3


def test_nova_aligns_to_its_own_deeper_image_encoder_block(nova):  # noqa: F811
    """NOVA (the test double of its transformer, or the real package): blocks 3 and 4 are its image-encoder blocks
    that see every token."""
    spec = load_spec(nova.path)
    adapter = ADAPTERS["nova"].from_pretrained(spec)
    adapter.transformer.train()
    grid = spec.token_grid(9, 64, 96)
    config = AlignmentConfig(
        loss="crepa",
        depth=3,
        student_grid=grid,
        student_width=spec.hidden_size,
        teacher_grid=grid,
        teacher_width=spec.hidden_size,
        projector_hidden_dim=16,
        target_depth=4,
        drop_first_frame=False,
    )
    alignment = Alignment.build(config, adapter)
    model = AlignedTransformer(adapter, alignment)
    latents = adapter.encode_videos(torch.rand(2, 9, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    conditioning = adapter.encode_prompts(["a red ball falls", "a white square moves right"])
    seeded(1)
    _, student = model(latents, conditioning)
    target = alignment.student_target
    assert student.shape == target.shape == (2, *grid, spec.hidden_size) and not target.requires_grad
    with torch.no_grad(), adapter.feature_extractor(adapter.transformer, 4) as block_4, block_4.capture() as seen:
        seeded(1)
        adapter.diffusion_loss(adapter.transformer, latents, conditioning)
    torch.testing.assert_close(target, adapter.alignment_tokens(seen.hidden_states, 2).reshape(target.shape))
    alignment.loss(student, {}).backward()
    assert all(p.grad is not None for p in alignment.projector.parameters())
