"""The precompute of an image-to-video run: it stores what the condition needs (the image latent posterior of
CogVideoX-I2V, Wan I2V and HunyuanVideo 1.5 I2V, the image embeddings of Wan 2.1 I2V and HunyuanVideo 1.5 I2V; nothing
more for TI2V-5B, LTX-Video and LTX-2, conditioned on their own latents), and the diffusion loss on the cache, which loads no encoder, is the loss on the videos."""

import pytest
import torch
from diffusers import (
    CogVideoXImageToVideoPipeline,
    HunyuanVideo15ImageToVideoPipeline,
    LTX2Pipeline,
    LTXPipeline,
    WanImageToVideoPipeline,
    WanPipeline,
)

from diffusers_tsa.adapters import ADAPTERS, TrainingOptions, load_spec
from diffusers_tsa.data import ClipSpec, load_video_dataset
from diffusers_tsa.features import ModelInputs
from diffusers_tsa.testing import (
    tiny_cogvideox_components,
    tiny_ltx2_components,
    tiny_ltx_video_components,
    tiny_wan_components,
    write_test_dataset,
)
from diffusers_tsa.testing.hunyuan_video15 import tiny_hunyuan_video15_components
from diffusers_tsa.training import TrainingClips, collate_examples, model_inputs


#: family -> (its tiny image-to-video checkpoint, the clip, the image columns the precompute adds)
FAMILIES = {
    "cogvideox_i2v": (
        lambda: CogVideoXImageToVideoPipeline(**tiny_cogvideox_components(image_to_video=True)),
        ClipSpec(height=96, width=144, max_num_frames=9),
        {"image_latent_moments"},
    ),
    "wan21_i2v": (
        lambda: WanImageToVideoPipeline(**tiny_wan_components(image_to_video=True)),
        ClipSpec(height=64, width=96, max_num_frames=9),
        {"image_latent_moments", "image_embeds"},
    ),
    "wan22_ti2v": (
        lambda: WanPipeline(**tiny_wan_components(ti2v=True)),
        ClipSpec(height=64, width=96, max_num_frames=9),
        set(),
    ),
    "hunyuan_video15_i2v": (
        lambda: HunyuanVideo15ImageToVideoPipeline(**tiny_hunyuan_video15_components(image_to_video=True)),
        ClipSpec(height=32, width=48, max_num_frames=9),
        {"image_latent_moments", "image_embeds"},
    ),
    "ltx_video": (
        lambda: LTXPipeline(**tiny_ltx_video_components()),
        ClipSpec(height=64, width=96, max_num_frames=9),
        set(),
    ),
    "ltx2": (lambda: LTX2Pipeline(**tiny_ltx2_components()), ClipSpec(height=64, width=96, max_num_frames=9), set()),
}
#: Image-to-video, each family with its own default share of conditioned samples.
OPTIONS = TrainingOptions(max_sequence_length=16, image_to_video=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("precompute_i2v")
    for name, (pipeline, _, _) in FAMILIES.items():
        pipeline().save_pretrained(root / name)
    write_test_dataset(root / "data", num_clips=2)
    return root


def adapter(tiny, family, **kwargs):
    spec = load_spec(tiny / family).for_training(OPTIONS)
    return ADAPTERS[spec.family].from_pretrained(spec, options=spec.options, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_loss_on_the_cache_is_the_loss_on_the_videos(tiny, family, monkeypatch):
    """The same clips, seed and noise: the stored latent posterior, prompt embeddings and image columns give the
    diffusion loss that the videos give. CogVideoX-I2V's first frame is augmented with fresh noise at each encoding:
    the cache keeps the draw of its precompute, so the video run is given that draw (its only difference)."""
    _, clip, image_columns = FAMILIES[family]
    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    transform = ModelInputs(adapter(tiny, family, transformer=False), clip, storage_dtype="float32", vae_batch_size=2)
    mapped = transform.map(table, batch_size=2)
    text_columns = set(transform.adapter.text_encoder_outputs([""]))
    assert set(transform.shapes) == {"latent_moments", *text_columns, *image_columns}
    full, bare = adapter(tiny, family), adapter(tiny, family, encoders=False)
    assert bare.vae is None and bare.text_encoder is None and getattr(bare, "image_encoder", None) is None
    columns = list(transform.shapes)
    from_videos = collate_examples([TrainingClips(mapped, clip)[i] for i in (0, 1)])
    from_cache = collate_examples(
        [TrainingClips(mapped, clip, inputs_columns=columns, decode_videos=False)[i] for i in (0, 1)]
    )
    if family == "cogvideox_i2v":
        stored = {name: from_cache["text"][name] for name in image_columns}
        monkeypatch.setattr(full, "image_encoder_outputs", lambda first_frames, videos=None: stored)
    losses = []
    for model, batch in ((full, from_videos), (bare, from_cache)):
        model.transformer.train()
        torch.manual_seed(0)
        latents, conditioning = model_inputs(model, batch, dtype=torch.float32)
        losses.append(sum(model.diffusion_loss(model.transformer, latents, conditioning).values()))
    assert losses[0].item() > 0
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=0)


def test_the_stored_image_posterior_is_the_augmented_first_frames(tiny):
    """CogVideoX-I2V's cache holds `image_encoder_outputs` of each clip's first frame, as cropped for training, for
    the precompute's draw of the augmentation: the same seed gives the same columns from the decoded clips."""
    _, clip, _ = FAMILIES["cogvideox_i2v"]
    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    model = adapter(tiny, "cogvideox_i2v", transformer=False)
    transform = ModelInputs(model, clip, storage_dtype="float32", vae_batch_size=2)
    torch.manual_seed(1)
    mapped = transform.map(table, batch_size=2)
    videos = collate_examples([TrainingClips(mapped, clip)[i] for i in (0, 1)])["videos"]
    torch.manual_seed(1)
    with model.encoders_loaded():
        expected = model.image_encoder_outputs(videos[:, 0], videos)["image_latent_moments"]
    stored = torch.tensor(mapped["image_latent_moments"])
    torch.testing.assert_close(stored, expected, rtol=1e-4, atol=1e-5)
