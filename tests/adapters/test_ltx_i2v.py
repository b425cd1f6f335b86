"""LTX-Video and LTX-2 first-frame conditioning against `LTXImageToVideoPipeline`'s / `LTX2ImageToVideoPipeline`'s own preparation and a hand computation: the
clean first latent frame, the conditioning mask, per-token timesteps `t * (1 - mask)`, the loss masked on the
conditioning tokens, and the share `p` of conditioned samples (0: byte-identical to T2V, 1: every sample)."""

import json

import diffusers
import numpy as np
import pytest
import torch
from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline, LTXImageToVideoPipeline, LTXPipeline
from einops import rearrange
from PIL import Image

from diffusers_tsa.adapters.first_frame import (
    condition_first_frame,
    conditioned_samples,
    loss_mask,
    token_timesteps,
)
from diffusers_tsa.adapters.flow_matching import FlowMatching
from diffusers_tsa.adapters.ltx2 import LTX2Adapter
from diffusers_tsa.adapters.ltx_video import LTXVideoAdapter
from diffusers_tsa.adapters.options import TrainingOptions
from diffusers_tsa.adapters.registry import load_spec
from diffusers_tsa.losses import tsa_loss
from diffusers_tsa.testing.ltx2 import tiny_ltx2_components
from diffusers_tsa.testing.ltx_video import tiny_ltx_video_components


PROMPTS = ["a red ball rolls", "a blue cube spins slowly"]


FAMILIES = {  # pipeline, I2V pipeline, tiny components, adapter
    "ltx_video": (LTXPipeline, LTXImageToVideoPipeline, tiny_ltx_video_components, LTXVideoAdapter),
    "ltx2": (LTX2Pipeline, LTX2ImageToVideoPipeline, tiny_ltx2_components, LTX2Adapter),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def adapter(request, tmp_path_factory):
    pipeline_class, _, components, adapter_class = FAMILIES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    pipeline_class(**components()).save_pretrained(root / "base")
    return adapter_class.from_pretrained(load_spec(root / "base"), options=TrainingOptions(max_sequence_length=16))


def with_p(monkeypatch, adapter, p: float) -> None:
    monkeypatch.setattr(type(adapter), "first_frame_conditioning_p", property(lambda self: p))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_conditioned_latents_and_mask_are_the_stock_pipelines(family):
    _, i2v_class, components, _ = FAMILIES[family]
    pipe = i2v_class(**components())
    image = torch.rand(2, 3, 64, 96) * 2 - 1
    packed, mask = pipe.prepare_latents(
        image, batch_size=2, num_channels_latents=8, height=64, width=96, num_frames=9, dtype=torch.float32,
        device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    f, h, w = 2, 2, 3
    unpacked = rearrange(packed, "b (f h w) c -> b c f h w", f=f, h=h, w=w)
    assert torch.equal(LTXImageToVideoPipeline._pack_latents(unpacked), packed)  # patch 1: frame-major tokens
    clean = unpacked[:, :, :1].repeat(1, 1, f, 1, 1)  # the image latents on every frame
    # sigma = 1 (pure noise): the pipeline's initial latents are the noise with the image on frame 0.
    ours = condition_first_frame(clean, unpacked, torch.ones(2, dtype=torch.bool))
    assert torch.equal(LTXImageToVideoPipeline._pack_latents(ours.noisy), packed)
    assert torch.equal(ours.mask, mask)
    # Per-token timesteps as the pipeline's denoising loop makes them: min(t, (1 - mask) * 1000).
    t = torch.tensor([700.0, 250.0])
    assert torch.equal(token_timesteps(t, mask), torch.min(t[:, None], (1 - mask) * 1000.0))


def test_only_the_conditioned_samples_get_their_clean_first_frame():
    latents, noisy = torch.randn(3, 4, 3, 2, 2), torch.randn(3, 4, 3, 2, 2)
    out = condition_first_frame(latents, noisy, torch.tensor([True, False, True]))
    assert torch.equal(out.noisy[[0, 2], :, 0], latents[[0, 2], :, 0])
    assert torch.equal(out.noisy[1], noisy[1]) and torch.equal(out.noisy[:, :, 1:], noisy[:, :, 1:])
    assert out.mask.tolist() == [[1.0] * 4 + [0.0] * 8, [0.0] * 12, [1.0] * 4 + [0.0] * 8]
    assert not conditioned_samples(5, 0.0, "cpu").any() and conditioned_samples(5, 1.0, "cpu").all()
    drawn = conditioned_samples(4000, 0.1, "cpu", torch.Generator().manual_seed(0)).float().mean()
    assert 0.08 < drawn < 0.12


def test_loss_mask_by_hand():
    prediction, target = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    mask = torch.tensor([[1.0, 1.0, 0, 0, 0, 0], [0.0] * 6])
    by_hand = torch.stack(
        [(prediction[0, 2:] - target[0, 2:]).pow(2).mean(), (prediction[1] - target[1]).pow(2).mean()]
    )
    loss = FlowMatching(weighting_scheme="none").loss(
        prediction, torch.zeros_like(target), target, torch.full((2,), 0.5), mask=loss_mask(mask)
    )
    assert torch.allclose(loss, by_hand.mean())


def test_p_zero_is_t2v_and_p_one_conditions_every_sample(adapter, monkeypatch):
    latents, conditioning = torch.randn(2, 8, 2, 2, 3), adapter.encode_prompts(PROMPTS)
    transformer = adapter.transformer
    assert adapter.first_frame_conditioning_p == 0.0  # a T2V run
    torch.manual_seed(3)
    t2v = adapter.diffusion_loss(transformer, latents, conditioning)["diffusion"]
    with_p(monkeypatch, adapter, 0.0)
    torch.manual_seed(3)
    assert adapter.diffusion_loss(transformer, latents, conditioning)["diffusion"].item() == t2v.item()

    with_p(monkeypatch, adapter, 1.0)
    seen = []
    hook = transformer.register_forward_pre_hook(lambda m, a, k: seen.append(k), with_kwargs=True)
    torch.manual_seed(3)
    loss = adapter.diffusion_loss(transformer, latents, conditioning)["diffusion"]
    hook.remove()
    tokens, timestep = seen[0]["hidden_states"], seen[0]["timestep"]
    assert torch.equal(tokens[:, :6], LTXPipeline._pack_latents(latents)[:, :6])  # frame 0 clean, every sample
    assert (timestep[:, :6] == 0).all() and (timestep[:, 6:] > 0).all()
    if isinstance(adapter, LTX2Adapter):  # the audio stream keeps the sample's timestep, as the pipeline's
        assert torch.equal(seen[0]["audio_timestep"], timestep[:, -1])
    assert not torch.allclose(loss, t2v)


def test_alignment_gradient_reaches_frame_0_tokens_the_diffusion_loss_does_not(adapter, monkeypatch):
    """The conditioning frame's tokens are queries and keys of the alignment term (so its gradient reaches them),
    while the diffusion loss is masked there (its gradient on frame 0's predictions is exactly zero)."""
    with_p(monkeypatch, adapter, 1.0)
    transformer = adapter.transformer
    captured = {}

    def keep(name):
        def hook(module, args, output):
            captured[name] = output[0] if isinstance(output, tuple) else output  # LTX-2: (video, audio)

        return hook

    hooks = [
        transformer.transformer_blocks[0].register_forward_hook(keep("block")),
        transformer.proj_out.register_forward_hook(keep("prediction")),
    ]
    transformer.requires_grad_(True)  # as LoRA / full fine-tuning trains it
    torch.manual_seed(5)
    try:
        loss = adapter.diffusion_loss(transformer, torch.randn(2, 8, 2, 2, 3), adapter.encode_prompts(PROMPTS))
    finally:
        transformer.requires_grad_(False)
        for hook in hooks:
            hook.remove()
    (on_prediction,) = torch.autograd.grad(loss["diffusion"], captured["prediction"], retain_graph=True)
    assert (on_prediction[:, :6] == 0).all() and (on_prediction[:, 6:] != 0).any(-1).all()
    features = rearrange(captured["block"], "b (f h w) c -> b f h w c", f=2, h=2, w=3)
    teacher = torch.randn(features.shape, generator=torch.Generator().manual_seed(0))
    (on_block,) = torch.autograd.grad(tsa_loss(features, teacher), captured["block"])
    assert (on_block[:, :6] != 0).any(-1).all()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_an_i2v_checkpoint_is_read_as_the_family_whose_i2v_pipeline_it_is(family, tmp_path):
    _, i2v_class, components, adapter_class = FAMILIES[family]
    i2v_class(**components()).save_pretrained(tmp_path)
    spec = load_spec(tmp_path)  # model_index.json's `_class_name` is the I2V pipeline's
    assert spec.family == family and isinstance(spec, adapter_class.spec_class)
    assert spec.image_to_video_pipeline_class_name == i2v_class.__name__
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    assert type(spec).read_tasks(model_index, {}) == {"t2v", "i2v"}  # one checkpoint, both tasks
    assert type(spec).default_first_frame_conditioning_p == 0.1  # finetrainers' default share


def test_validation_builds_the_stock_i2v_pipeline_that_starts_from_the_image(adapter, monkeypatch):
    i2v_class = getattr(diffusers, adapter.spec.image_to_video_pipeline_class_name)
    monkeypatch.setattr(type(adapter.spec), "pipeline_class", property(lambda spec: i2v_class))  # an I2V run's
    pipe = adapter.pipeline(adapter.transformer)
    assert type(pipe) is i2v_class
    # LTX-2's pipeline re-compresses the image with H.264 by default (PyAV); 0 skips it.
    extra = {"image_crf": 0} if isinstance(adapter, LTX2Adapter) else {}

    def video(color):
        image = Image.new("RGB", (96, 64), color)
        return pipe(
            prompt=PROMPTS[0], image=image, num_frames=9, height=64, width=96, num_inference_steps=2,
            max_sequence_length=16, output_type="np", generator=torch.Generator().manual_seed(0), **extra,
        ).frames[0]  # fmt: skip

    red, blue = video((220, 30, 30)), video((30, 30, 220))
    assert red.shape == (9, 64, 96, 3) and not np.allclose(red, blue)


def test_ltx2_without_pyav_skips_the_re_compression_with_one_warning(monkeypatch, caplog):
    """`LTX2ImageToVideoPipeline` re-compresses its image with PyAV: without it, validation and `eval.generate` pass
    `image_crf=0` and say so once; with it, the stock default; the card's code asks for it."""
    import diffusers.utils

    from diffusers_tsa.adapters import ltx2

    both = frozenset({"t2v", "i2v"})
    spec = ltx2.LTX2Spec(pretrained_model_name_or_path="ltx2", num_blocks=2, hidden_size=8, min_depth=1, tasks=both)
    image = Image.new("RGB", (96, 64))
    monkeypatch.setattr(diffusers.utils, "is_av_available", lambda: True)
    assert spec.image_kwargs(image) == {"image": image}
    monkeypatch.setattr(diffusers.utils, "is_av_available", lambda: False)
    ltx2._warn_no_pyav.cache_clear()
    with caplog.at_level("WARNING", logger=ltx2.__name__):
        assert spec.image_kwargs(image) == spec.image_kwargs(image) == {"image": image, "image_crf": 0}
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "pip install av" in caplog.records[0].message
    i2v = spec.for_training(TrainingOptions(max_sequence_length=16, image_to_video=True))
    assert (spec.usage_requirements, i2v.usage_requirements) == ((), ("av",))
