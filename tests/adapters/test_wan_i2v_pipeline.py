"""Wan's image-to-video against the stock `WanImageToVideoPipeline`, end to end on tiny offline pipelines: what the
checkpoints are detected as, the Wan 2.1 I2V loss computed by hand from the pipeline's own `prepare_latents` and
`encode_image` for a PIL image, Wan 2.2 A14B I2V (no image encoder), TI2V-5B's mask and first latent frame as the
pipeline prepares them, the alignment gradient on the first frame's tokens, and validation with the stock pipeline
(the family rules one by one are in `test_wan_i2v.py`)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline
from PIL import Image

from diffusers_tsa.adapters import ADAPTERS, GenerationSettings, TrainingOptions, load_spec
from diffusers_tsa.adapters.wan import TI2V_FIRST_FRAME_CONDITIONING_P
from diffusers_tsa.errors import ModelLayoutError
from diffusers_tsa.hooks import BlockFeatureExtractor
from diffusers_tsa.testing import tiny_wan_components


PROMPT = "a white square moves right"
FRAMES, HEIGHT, WIDTH = 9, 64, 96  # Wan 2.1 latents 3 x 8 x 12; TI2V-5B latents 3 x 4 x 6, tokens 3 x 2 x 3
I2V = TrainingOptions(max_sequence_length=16, image_to_video=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny Wan 2.1 T2V, Wan 2.1 I2V (CLIP image encoder), Wan 2.2 A14B I2V and TI2V-5B pipelines, saved."""
    root = tmp_path_factory.mktemp("wan_i2v_pipeline")
    WanPipeline(**tiny_wan_components()).save_pretrained(root / "t2v")
    WanPipeline(**tiny_wan_components(ti2v=True)).save_pretrained(root / "ti2v")
    WanImageToVideoPipeline(**tiny_wan_components(image_to_video=True)).save_pretrained(root / "i2v")
    experts = tiny_wan_components(image_to_video=True, two_experts=True)
    WanImageToVideoPipeline(**experts).save_pretrained(root / "a14b")
    return root


def adapter(tiny, name, **options):
    spec = load_spec(tiny / name)
    return ADAPTERS[spec.family].from_pretrained(spec, options=replace(I2V, **options))


def clip(seed=0):
    """One clip `(1, T, C, H, W)` in [-1, 1] on the 8-bit grid (what a decoded video file holds), and its first
    frame as a PIL image (what the pipeline is given)."""
    pixels = torch.randint(0, 256, (1, FRAMES, 3, HEIGHT, WIDTH), generator=torch.Generator().manual_seed(seed))
    image = Image.fromarray(pixels[0, 0].permute(1, 2, 0).numpy().astype(np.uint8))
    return pixels.float() / 127.5 - 1, image


def test_detection(tiny):
    t2v, i2v, a14b, ti2v = (load_spec(tiny / name) for name in ("t2v", "i2v", "a14b", "ti2v"))
    assert {spec.family for spec in (t2v, i2v, a14b, ti2v)} == {"wan"}
    assert (t2v.tasks, i2v.tasks, ti2v.tasks) == ({"t2v"}, {"i2v"}, {"t2v", "i2v"})
    assert (i2v.has_image_encoder, a14b.has_image_encoder, a14b.two_experts) == (True, False, True)
    assert i2v.pipeline_class is WanImageToVideoPipeline and t2v.pipeline_class is WanPipeline
    assert ti2v.pipeline_class is WanPipeline and ti2v.for_training(I2V).pipeline_class is WanImageToVideoPipeline
    with pytest.raises(ModelLayoutError, match="--first_frame_conditioning_p.*--image_to_video"):
        ti2v.for_training(TrainingOptions(first_frame_conditioning_p=0.5))
    assert ti2v.first_frame_conditioning_p(ti2v.for_training(I2V).options) == TI2V_FIRST_FRAME_CONDITIONING_P
    assert i2v.first_frame_conditioning_p(i2v.for_training(I2V).options) == 1.0


def test_wan21_loss_by_hand_from_the_pipelines_own_condition(tiny):
    wan = adapter(tiny, "i2v")
    pipe = WanImageToVideoPipeline.from_pretrained(tiny / "i2v")
    video, image = clip()
    conditioning = wan.conditioning(
        {**wan.text_encoder_outputs([PROMPT]), **wan.image_encoder_outputs(video[:, 0], video)}
    )
    pixels = pipe.video_processor.preprocess(image, height=HEIGHT, width=WIDTH).to(torch.float32)
    torch.testing.assert_close(pixels, video[:, 0])
    _, condition = pipe.prepare_latents(pixels, 1, 8, HEIGHT, WIDTH, FRAMES, torch.float32, "cpu")
    image_embeds = pipe.encode_image(image, "cpu")  # from the PIL image, as at inference
    torch.testing.assert_close(conditioning.image_embeds, image_embeds)
    assert image_embeds.shape == (1, 17, 16)  # CLS + 4 x 4 patches, penultimate layer
    latents = wan.encode_videos(video)
    torch.manual_seed(0)
    loss = wan.diffusion_loss(wan.transformer, latents, conditioning, timesteps=torch.tensor([400]))["diffusion"]
    torch.manual_seed(0)
    noise = torch.randn_like(latents)
    prediction = pipe.transformer(
        hidden_states=torch.cat([0.6 * latents + 0.4 * noise, condition], dim=1),
        timestep=torch.tensor([400.0]),
        encoder_hidden_states=conditioning.prompt_embeds,
        encoder_hidden_states_image=image_embeds,
        return_dict=False,
    )[0]
    torch.testing.assert_close(loss, (prediction - (noise - latents)).pow(2).mean(), rtol=1e-4, atol=1e-6)


def test_wan22_a14b_i2v_concatenates_without_image_embeds(tiny):
    wan = adapter(tiny, "a14b", expert="high_noise")
    video, _ = clip(1)
    outputs = wan.image_encoder_outputs(video[:, 0], video)
    assert set(outputs) == {"image_latent_moments"} and outputs["image_latent_moments"].shape == (1, 16, 3, 8, 12)
    conditioning = wan.conditioning({**wan.text_encoder_outputs([PROMPT]), **outputs})
    assert conditioning.image_embeds is None
    assert torch.isfinite(wan.diffusion_loss(wan.transformer, wan.encode_videos(video), conditioning)["diffusion"])


def test_ti2v_mask_and_first_latent_frame_are_the_pipelines(tiny):
    wan = adapter(tiny, "ti2v", first_frame_conditioning_p=1.0)
    video, image = clip(2)
    assert wan.image_encoder_outputs(video[:, 0], video) == {}
    pipe = WanImageToVideoPipeline.from_pretrained(tiny / "ti2v")
    pixels = pipe.video_processor.preprocess(image, height=HEIGHT, width=WIDTH).to(torch.float32)
    _, first_latent, first_frame_mask = pipe.prepare_latents(pixels, 1, 8, HEIGHT, WIDTH, FRAMES, torch.float32)
    generated = wan.generated_mask(wan.encode_videos(video))
    torch.testing.assert_close(generated, first_frame_mask)
    # The pipeline's per-token timesteps (`first_frame_mask[0][0][:, ::2, ::2] * t`).
    by_pipeline = (first_frame_mask[0][0][:, ::2, ::2] * 700.0).flatten()[None]
    torch.testing.assert_close(wan.token_timesteps(generated, torch.tensor([700.0])), by_pipeline)
    # The causal VAE: the clip's first latent frame is the image's own latent (here its mode).
    torch.testing.assert_close(wan.latent_moments(video).chunk(2, 1)[0][:, :, :1], first_latent)
    assert adapter(tiny, "ti2v", first_frame_conditioning_p=0.0).generated_mask(first_latent).eq(1).all()


def test_ti2v_alignment_gradient_reaches_the_first_frames_tokens(tiny):
    wan = adapter(tiny, "ti2v", first_frame_conditioning_p=1.0)
    wan.transformer.requires_grad_(True)
    video, _ = clip(3)
    conditioning = wan.conditioning(wan.text_encoder_outputs([PROMPT]))
    with BlockFeatureExtractor(wan.transformer, depth=1) as extractor, extractor.capture() as captured:
        wan.diffusion_loss(wan.transformer, wan.encode_videos(video), conditioning, timesteps=torch.tensor([500]))
    features = captured.hidden_states
    assert features.shape[1] == 3 * 2 * 3  # the first frame's 6 tokens stay in the aligned grid
    # A term on the first frame's tokens (as queries or keys) trains the blocks up to the hooked one.
    (grad,) = torch.autograd.grad(features[:, :6].pow(2).mean(), wan.transformer.blocks[0].attn1.to_q.weight)
    assert grad.abs().max() > 0


def test_validation_pipeline_is_the_stock_i2v_one(tiny):
    wan = adapter(tiny, "i2v")
    pipe = wan.pipeline(wan.transformer)
    assert type(pipe) is WanImageToVideoPipeline and pipe.image_encoder is wan.image_encoder
    _, image = clip()
    # Through `spec.generate`: this diffusers' I2V pipeline needs `ftfy` for prompts (not installed here), so the
    # spec gives it `WanPipeline`'s embeddings.
    settings = GenerationSettings(FRAMES, HEIGHT, WIDTH, num_inference_steps=2, max_sequence_length=16)
    frames = wan.spec.generate(pipe, PROMPT, settings, generator=torch.Generator().manual_seed(0), image=image)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
