"""HunyuanVideo 1.5's image-to-video rules on tiny offline pipelines: detection and refusals (the task, the sizes the
stock pipeline generates at), the condition latents, mask and SigLIP embeddings against
`HunyuanVideo15ImageToVideoPipeline`'s own `prepare_cond_latents_and_mask` and `encode_image`, and what the
transformer is given."""

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideo15ImageToVideoPipeline, HunyuanVideo15Pipeline
from PIL import Image

from diffusers_tsa.adapters import ADAPTERS, TrainingOptions, load_spec
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.testing.hunyuan_video15 import tiny_hunyuan_video15_components
from diffusers_tsa.testing.spy import TransformerSpy, image_to_video_step


FRAMES, HEIGHT, WIDTH = 9, 32, 48  # latents 3 x 2 x 3
I2V = TrainingOptions(max_sequence_length=16, image_to_video=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny HunyuanVideo 1.5 T2V and I2V pipelines, saved to disk."""
    root = tmp_path_factory.mktemp("hunyuan_i2v")
    HunyuanVideo15Pipeline(**tiny_hunyuan_video15_components()).save_pretrained(root / "t2v")
    HunyuanVideo15ImageToVideoPipeline(**tiny_hunyuan_video15_components(image_to_video=True)).save_pretrained(
        root / "i2v"
    )
    return root


def adapter(tiny, name="i2v", options=I2V):
    spec = load_spec(tiny / name).for_training(options)
    return ADAPTERS[spec.family].from_pretrained(spec, options=spec.options)


def clips(batch=2, seed=0):
    """Clips `(B, T, C, H, W)` in [-1, 1] on the 8-bit grid, and their first frames as PIL images."""
    pixels = torch.randint(0, 256, (batch, FRAMES, 3, HEIGHT, WIDTH), generator=torch.Generator().manual_seed(seed))
    images = [Image.fromarray(clip[0].permute(1, 2, 0).numpy().astype(np.uint8)) for clip in pixels]
    return pixels.float() / 127.5 - 1, images


def test_detection_and_refusals(tiny):
    t2v, i2v = load_spec(tiny / "t2v"), load_spec(tiny / "i2v")
    assert (t2v.tasks, i2v.tasks) == ({"t2v"}, {"i2v"})
    assert i2v.pipeline_class is HunyuanVideo15ImageToVideoPipeline and t2v.pipeline_class is HunyuanVideo15Pipeline
    with pytest.raises(ModelLayoutError, match="pass --image_to_video"):
        i2v.for_training(TrainingOptions())
    with pytest.raises(ModelLayoutError, match="drop --image_to_video"):
        t2v.for_training(I2V)


def test_an_i2v_transformer_in_a_t2v_checkpoint_is_refused(tmp_path):
    HunyuanVideo15Pipeline(**{
        k: v for k, v in tiny_hunyuan_video15_components(image_to_video=True).items()
        if k not in ("image_encoder", "feature_extractor")
    }).save_pretrained(tmp_path / "mislabelled")  # fmt: skip
    with pytest.raises(
        ModelLayoutError, match="task_type='i2v'.*outside a `HunyuanVideo15ImageToVideoPipeline` checkpoint"
    ):
        load_spec(tmp_path / "mislabelled")


def test_sizes_the_i2v_pipeline_does_not_generate_at_are_refused_with_the_nearest(tiny):
    spec = load_spec(tiny / "i2v")
    spec.check_clip(FRAMES, HEIGHT, WIDTH)
    with pytest.raises(GridError, match="nearest for this aspect ratio is `--height 32 --width 64`"):
        spec.check_clip(FRAMES, 32, 80)
    load_spec(tiny / "t2v").check_clip(FRAMES, 32, 80)  # text-to-video takes any multiple of 16


def test_the_condition_is_the_pipelines_own(tiny):
    model, (videos, images) = adapter(tiny), clips()
    with model.encoders_loaded():
        outputs = model.image_encoder_outputs(videos[:, 0], videos)
    conditioning = model.conditioning({**model.text_encoder_outputs(["a", "b"]), **outputs})
    pipe = HunyuanVideo15ImageToVideoPipeline.from_pretrained(tiny / "i2v")
    for i, image in enumerate(images):
        latents = torch.zeros(1, 4, 3, 2, 3)
        condition, mask = pipe.prepare_cond_latents_and_mask(
            latents, image, 1, HEIGHT, WIDTH, torch.float32, torch.device("cpu")
        )
        torch.testing.assert_close(conditioning.image_latents[i : i + 1], condition[:, :, :1], atol=1e-5, rtol=1e-5)
        assert condition[:, :, 1:].eq(0).all() and mask[:, :, 0].eq(1).all() and mask[:, :, 1:].eq(0).all()
        embeds = pipe.encode_image(image, 1, torch.device("cpu"), torch.float32)
        torch.testing.assert_close(conditioning.image_embeds[i : i + 1], embeds)


def test_the_transformer_gets_the_image_latent_mask_and_embeddings(tiny):
    model, (videos, _) = adapter(tiny), clips()
    inputs, conditioning, loss = image_to_video_step(model, videos)
    hidden = inputs["hidden_states"]
    assert hidden.shape == (2, 2 * 4 + 1, 3, 2, 3) and torch.isfinite(loss)
    torch.testing.assert_close(hidden[:, 4:8, :1], conditioning.image_latents)
    assert hidden[:, 4:8, 1:].eq(0).all() and hidden[:, 8, 0].eq(1).all() and hidden[:, 8, 1:].eq(0).all()
    assert inputs["image_embeds"] is conditioning.image_embeds


def test_a_text_to_video_run_is_unchanged(tiny):
    model, (videos, _) = adapter(tiny, "t2v", TrainingOptions(max_sequence_length=16)), clips()
    assert model.image_encoder_outputs(videos[:, 0], videos) == {}
    conditioning = model.conditioning(model.text_encoder_outputs(["a", "b"]))
    spy = TransformerSpy(model.transformer)
    model.diffusion_loss(spy, model.encode_videos(videos), conditioning)
    ((inputs),) = spy.inputs
    assert inputs["hidden_states"][:, 4:].eq(0).all() and inputs["image_embeds"].eq(0).all()
