"""CogVideoX's image-to-video rules on tiny offline pipelines (CogVideoX-5b-I2V-like 1.0 and CogVideoX1.5-5B-I2V-like
1.5): detection and refusals, the image latents and condition video against `CogVideoXImageToVideoPipeline`'s own
`prepare_latents`, the conditioning-noise augmentation's spread, and what the transformer is given."""

import math

import pytest
import torch
from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline

from diffusers_tsa.adapters import ADAPTERS, TrainingOptions, cogvideox, load_spec
from diffusers_tsa.adapters.cogvideox import CogVideoXAdapter, CogVideoXImageConditioning
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.testing import tiny_cogvideox_components
from diffusers_tsa.testing.spy import image_to_video_step


HEIGHT, WIDTH = 96, 144  # latents 12 x 18, the tiny transformers' sample size
FRAMES = {"i2v": 9, "i2v15": 17}  # latents 3, and 5 padded to 6 (pairs)
I2V = TrainingOptions(image_to_video=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny CogVideoX T2V, CogVideoX 1.0 I2V and 1.5 I2V pipelines, saved to disk."""
    root = tmp_path_factory.mktemp("cogvideox_i2v")
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(root / "t2v")
    CogVideoXImageToVideoPipeline(**tiny_cogvideox_components(image_to_video=True)).save_pretrained(root / "i2v")
    components = tiny_cogvideox_components(image_to_video=True, patch_size_t=2)
    CogVideoXImageToVideoPipeline(**components).save_pretrained(root / "i2v15")
    return root


def adapter(tiny, name, options=I2V) -> CogVideoXAdapter:
    spec = load_spec(tiny / name)
    return ADAPTERS[spec.family].from_pretrained(spec, options=options)


def frames(batch=2, seed=0):
    return torch.rand(batch, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_detection(tiny):
    t2v, i2v, i2v15 = (load_spec(tiny / name) for name in ("t2v", "i2v", "i2v15"))
    assert (t2v.tasks, i2v.tasks, i2v15.tasks) == ({"t2v"}, {"i2v"}, {"i2v"})
    assert (i2v.has_ofs, i2v15.has_ofs) == (False, True)
    assert (i2v.learned_size, i2v15.learned_size) == ((HEIGHT, WIDTH), None)
    assert i2v.pipeline_class is CogVideoXImageToVideoPipeline and t2v.pipeline_class is CogVideoXPipeline


@pytest.mark.parametrize(
    ("name", "options", "flag"),
    [("t2v", I2V, "drop --image_to_video"), ("i2v", TrainingOptions(), "pass --image_to_video")],
)
def test_the_wrong_task_is_refused_before_loading(tiny, name, options, flag):
    with pytest.raises(ModelLayoutError, match=flag):
        load_spec(tiny / name).for_training(options)


def test_an_ofs_transformer_outside_an_i2v_checkpoint_is_refused(tiny, tmp_path):
    components = tiny_cogvideox_components(image_to_video=True, patch_size_t=2)
    CogVideoXPipeline(**components).save_pretrained(tmp_path / "mislabelled")
    with pytest.raises(ModelLayoutError, match="outside a `CogVideoXImageToVideoPipeline` checkpoint"):
        load_spec(tmp_path / "mislabelled")


def test_learned_positions_take_only_their_sample_size(tiny):
    spec = load_spec(tiny / "i2v")
    spec.check_clip(9, HEIGHT, WIDTH)
    with pytest.raises(GridError, match=r"must be 96 and 144 \(its learned positional embeddings"):
        spec.check_clip(9, 64, 96)


@pytest.mark.parametrize("name", ["i2v", "i2v15"])
def test_the_image_latents_and_condition_video_are_the_pipelines_own(tiny, name, monkeypatch):
    """Without the augmentation, the image latents sampled from the stored posterior with the generator's draw, and
    the condition video, equal `prepare_latents`' for each clip (the pipeline repeats one image over its batch)."""
    monkeypatch.setattr(cogvideox, "IMAGE_NOISE_LOG_SIGMA", (-math.inf, 0.0))  # sigma 0
    model, images = adapter(tiny, name), frames()
    with model.encoders_loaded():
        outputs = model.image_encoder_outputs(images)
    pipe = CogVideoXImageToVideoPipeline.from_pretrained(tiny / name)
    # The latent frames the pipeline samples: CogVideoX 1.5's count padded to pairs, as `__call__` pads it.
    latent_frames = model.pad_latent_frames(torch.zeros(1, (FRAMES[name] - 1) // 4 + 1, 1, 1, 1)).shape[1]
    num_frames = (latent_frames - 1) * 4 + 1
    for i, image in enumerate(images):
        torch.manual_seed(i)
        ours = model.conditioning(
            {"prompt_embeds": torch.zeros(1, 16, 32), **{k: v[i : i + 1] for k, v in outputs.items()}}
        )
        assert isinstance(ours, CogVideoXImageConditioning) and ours.image_latents.shape == (1, 1, 4, 12, 18)
        _, expected = pipe.prepare_latents(
            image[None], 1, 4, num_frames, HEIGHT, WIDTH, torch.float32, torch.device("cpu"),
            generator=torch.Generator().manual_seed(i), latents=torch.zeros(1),
        )  # fmt: skip
        torch.testing.assert_close(model.condition_video(ours.image_latents, latent_frames), expected)


def test_the_first_frame_gets_noise_of_log_sigma_normal_minus_3_one_half(tiny, monkeypatch):
    """The pixels the VAE encodes differ from each first frame by Gaussian noise whose log standard deviation, over
    many frames, has the reference trainers' mean -3 and spread 0.5."""
    model = adapter(tiny, "i2v")
    encoded = []
    encode = model.vae.encode
    monkeypatch.setattr(model.vae, "encode", lambda pixels: encoded.append(pixels) or encode(pixels))
    images = torch.zeros(400, 3, 16, 16)  # flat frames: the encoded pixels are the noise
    torch.manual_seed(0)
    with model.encoders_loaded():
        model.image_encoder_outputs(images)
    (pixels,) = encoded
    log_sigma = pixels.flatten(1).std(1).log()
    assert abs(log_sigma.mean().item() + 3.0) < 0.08 and abs(log_sigma.std().item() - 0.5) < 0.06


@pytest.mark.parametrize(("name", "hidden_frames", "ofs"), [("i2v", 3, None), ("i2v15", 6, 2.0)])
def test_the_transformer_gets_the_condition_on_its_channels_and_ofs(tiny, name, hidden_frames, ofs):
    model = adapter(tiny, name)
    videos = torch.rand(2, FRAMES[name], 3, HEIGHT, WIDTH) * 2 - 1
    inputs, conditioning, loss = image_to_video_step(model, videos)
    hidden = inputs["hidden_states"]
    assert hidden.shape == (2, hidden_frames, 8, 12, 18) and torch.isfinite(loss)
    torch.testing.assert_close(hidden[:, :1, 4:], conditioning.image_latents)  # the image first (1.5: the padding's)
    assert hidden[:, 1:, 4:].eq(0).all() and inputs["encoder_hidden_states"] is conditioning.prompt_embeds
    assert (None if "ofs" not in inputs else inputs["ofs"].tolist()) == (None if ofs is None else [ofs])
