"""Wan's image-to-video rules on tiny offline pipelines: Wan 2.1 I2V's condition (frame mask, condition latents,
image embeddings) equals `WanImageToVideoPipeline`'s own `prepare_latents` and `encode_image`; TI2V-5B's per-token
timesteps and loss mask against a hand computation; the task refusals."""

from dataclasses import replace

import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline

from diffusers_tsa.adapters import ADAPTERS, TrainingOptions, load_spec
from diffusers_tsa.adapters.wan import WanAdapter, WanImageConditioning
from diffusers_tsa.errors import ModelLayoutError
from diffusers_tsa.testing import tiny_wan_components
from diffusers_tsa.testing.spy import TransformerSpy


FRAMES, HEIGHT, WIDTH = 9, 64, 96  # latents 3 x 8 x 12
I2V = TrainingOptions(max_sequence_length=16, image_to_video=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny Wan 2.1 T2V, Wan 2.1 I2V (with a CLIP image encoder) and TI2V-5B-like pipelines, saved to disk."""
    root = tmp_path_factory.mktemp("wan_i2v")
    WanPipeline(**tiny_wan_components()).save_pretrained(root / "t2v")
    WanImageToVideoPipeline(**tiny_wan_components(image_to_video=True)).save_pretrained(root / "i2v")
    WanPipeline(**tiny_wan_components(ti2v=True)).save_pretrained(root / "ti2v")
    return root


def adapter(tiny, name, options=I2V) -> WanAdapter:
    spec = load_spec(tiny / name)
    return ADAPTERS[spec.family].from_pretrained(spec, options=options)


def clips(batch=2, seed=0):
    return torch.rand(batch, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_i2v_condition_is_the_pipelines_own(tiny):
    wan = adapter(tiny, "i2v")
    videos = clips()
    # The frames as 8-bit images, what a user gives the pipeline.
    videos[:, 0] = (((videos[:, 0] + 1) * 127.5).round() / 127.5) - 1
    with wan.encoders_loaded():
        outputs = wan.image_encoder_outputs(videos[:, 0], videos)
        pipe = WanImageToVideoPipeline.from_pretrained(tiny / "i2v")
        # The pipeline repeats one image over its batch: one call per clip.
        condition = torch.cat(
            [
                pipe.prepare_latents(
                    image[None],
                    1,
                    8,
                    HEIGHT,
                    WIDTH,
                    FRAMES,
                    torch.float32,
                    torch.device("cpu"),
                    latents=torch.zeros(1),
                )[1]
                for image in videos[:, 0]
            ]
        )
        pixels = ((videos[:, 0] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        embeds = pipe.encode_image(list(pixels), torch.device("cpu"))
    conditioning = wan.conditioning({"prompt_embeds": torch.zeros(2, 16, 32), **outputs})
    assert isinstance(conditioning, WanImageConditioning)
    torch.testing.assert_close(conditioning.image_latents, condition[:, 4:], atol=1e-5, rtol=1e-5)
    mask = condition[:, :4]
    assert mask[:, :, 0].eq(1).all() and mask[:, :, 1:].eq(0).all()
    torch.testing.assert_close(outputs["image_embeds"], embeds)


def test_ti2v_timesteps_are_zero_on_the_conditioning_frame_and_its_loss_is_masked(tiny):
    wan = adapter(tiny, "ti2v", replace(I2V, first_frame_conditioning_p=1.0))
    generated = wan.generated_mask(torch.zeros(2, 3, 3, 4, 6))
    assert generated[:, :, 0].eq(0).all() and generated[:, :, 1:].eq(1).all()
    per_token = wan.token_timesteps(generated, torch.tensor([500.0, 250.0]))
    pt, ph, pw = wan.spec.patch_size
    tokens_per_frame = (4 // ph) * (6 // pw)
    expected = torch.tensor([500.0, 250.0])[:, None].expand(2, 3 * tokens_per_frame).clone()
    expected[:, :tokens_per_frame] = 0
    torch.testing.assert_close(per_token, expected)


@pytest.mark.parametrize(
    ("name", "options", "flag"),
    [
        ("t2v", I2V, "--image_to_video"),
        ("i2v", TrainingOptions(), "--image_to_video"),
        ("i2v", replace(I2V, first_frame_conditioning_p=0.5), "--first_frame_conditioning_p"),
    ],
)
def test_the_wrong_task_is_refused_before_loading(tiny, name, options, flag):
    with pytest.raises(ModelLayoutError, match=flag):
        load_spec(tiny / name).for_training(options)


def test_ti2v_gives_the_clean_first_frame_and_leaves_it_out_of_the_diffusion_loss(tiny):
    wan = adapter(tiny, "ti2v", replace(I2V, first_frame_conditioning_p=1.0))
    spy, latents = TransformerSpy(wan.transformer, leaf_predictions=True), wan.encode_videos(clips())
    conditioning = wan.conditioning(wan.text_encoder_outputs(["a", "b"]))
    wan.diffusion_loss(spy, latents, conditioning)["diffusion"].backward()
    (inputs,), (prediction,) = spy.inputs, spy.predictions
    torch.testing.assert_close(inputs["hidden_states"][:, :, 0], latents[:, :, 0])
    assert not torch.allclose(inputs["hidden_states"][:, :, 1:], latents[:, :, 1:])
    assert inputs["timestep"][:, : 2 * 3].eq(0).all() and inputs["timestep"][:, 2 * 3 :].gt(0).all()
    assert prediction.grad[:, :, 0].eq(0).all() and prediction.grad[:, :, 1:].abs().gt(0).any()


def test_wan21_i2v_concatenates_the_mask_and_condition_and_takes_the_image_embeds(tiny):
    wan = adapter(tiny, "i2v")
    videos = clips()
    with wan.encoders_loaded():
        outputs = {**wan.text_encoder_outputs(["a", "b"]), **wan.image_encoder_outputs(videos[:, 0], videos)}
        latents = wan.encode_videos(videos)
    spy, conditioning = TransformerSpy(wan.transformer, leaf_predictions=True), wan.conditioning(outputs)
    loss = wan.diffusion_loss(spy, latents, conditioning)["diffusion"]
    (inputs,) = spy.inputs
    hidden = inputs["hidden_states"]
    assert hidden.shape == (2, 2 * 8 + 4, 3, 8, 12) and torch.isfinite(loss)
    torch.testing.assert_close(hidden[:, 8:12], torch.zeros_like(hidden[:, 8:12]).index_fill_(2, torch.tensor([0]), 1))
    torch.testing.assert_close(hidden[:, 12:], conditioning.image_latents)
    assert inputs["encoder_hidden_states_image"] is outputs["image_embeds"]
