"""NOVA's own rules against the test double of `NOVATransformer3DModel` and, when `diffnext` is installed, against
the real package (the same checks, on a tiny NOVA built from small registered widths); what every family does is in
`test_family_contract.py`."""

import importlib.util
import sys

import numpy as np
import pytest
import torch
from einops import rearrange

from diffusers_tsa.adapters import ADAPTERS, GenerationSettings, load_spec
from diffusers_tsa.adapters.nova import NOVAAdapter, NOVASpec
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.testing.nova import diffnext_modules, tiny_nova_checkpoint


HAS_DIFFNEXT = importlib.util.find_spec("diffnext") is not None
FRAMES, HEIGHT, WIDTH = 9, 64, 96  # latents 3 x 8 x 12, image tokens 3 x 4 x 6, 6 video-encoder tokens per frame
PROMPTS = ["a red ball falls", "a white square moves right"]


REAL_NOVA = pytest.param(
    "real",
    marks=[
        pytest.mark.skipif(
            not HAS_DIFFNEXT, reason="NOVA's diffnext is not installed (pip install from github.com/baaivision/NOVA)"
        ),
        pytest.mark.optional_suite("NOVA's real diffnext package (install it as the README's NOVA section says)"),
    ],
)


@pytest.fixture(scope="module", params=["double", REAL_NOVA])
def nova(request, tmp_path_factory):
    """A tiny `NOVAPipeline` checkpoint: the test double, or the real package's model at small registered widths."""
    with tiny_nova_checkpoint(tmp_path_factory.mktemp(request.param), request.param) as checkpoint:
        yield checkpoint


@pytest.fixture
def adapter(nova):
    adapter = NOVAAdapter.from_pretrained(load_spec(nova.path))
    adapter.transformer.train()  # as the training loop does: NOVA's forward is its training step in train mode
    return adapter


def clips(batch=2, seed=0):
    return torch.rand(batch, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seeded(seed=0):
    torch.manual_seed(seed)
    np.random.seed(seed)


def test_family_and_spec_from_configs(nova):
    spec = load_spec(nova.path)
    assert isinstance(spec, NOVASpec) and spec.family == "nova" and ADAPTERS["nova"] is NOVAAdapter
    # 4 image-encoder blocks, the first 2 of which see only the visible tokens.
    shape_rules = (spec.num_blocks, spec.min_depth, spec.patch_size, spec.vae_scale, spec.temporal_compression)
    assert shape_rules == (4, 3, 2, 8, 4)
    assert spec.image_size == (HEIGHT, WIDTH)
    assert spec.token_grid(FRAMES, HEIGHT, WIDTH) == (3, 4, 6)
    spec.check_clip(FRAMES, HEIGHT, WIDTH)


def test_clip_rules_name_the_flags():
    spec = NOVASpec(pretrained_model_name_or_path="", num_blocks=32, hidden_size=1024, min_depth=17, tile_frames=17)
    assert spec.token_grid(33, 480, 768) == (9, 30, 48)  # NOVA-0.6B's grid
    spec.check_clip(33, 480, 768)
    with pytest.raises(GridError, match=r"`num_frames=21`: .* tiles of 17, so it must be 16m\+1 \(e.g. 17 or 33\)"):
        spec.check_clip(21, 480, 768)
    with pytest.raises(GridError, match=r"`num_frames=32` must be 4k\+1"):
        spec.check_clip(32, 480, 768)
    with pytest.raises(GridError, match="`height=480`, `width=720` must be 480 and 768"):
        spec.check_clip(33, 480, 720)


@pytest.mark.parametrize("depth", [2, 5])
def test_depth_below_the_encoder_stage_or_beyond_the_blocks_is_refused(adapter, depth):
    with pytest.raises(ModelLayoutError, match=rf"`depth={depth}` .* \[3, 4\].*image_encoder.blocks"):
        adapter.spec.check_depth(depth)
    with pytest.raises(ModelLayoutError, match="`depth="):
        adapter.feature_extractor(adapter.transformer, depth)


def test_prompts_padded_as_nova_pads_them(adapter):
    text_embed = adapter.transformer.text_embed
    text_embed.encoders = [adapter.tokenizer, adapter.text_encoder]
    expected = text_embed.eval().encode_prompts(PROMPTS)  # NOVA's own padding, without its caption dropout
    assert torch.equal(adapter.encode_prompts(PROMPTS), expected)


def test_latents_scaled_as_nova_scales_them(adapter):
    videos = clips()
    torch.manual_seed(1)
    latents = adapter.encode_videos(videos)
    torch.manual_seed(1)
    sample = adapter.vae.encode(rearrange(videos, "b t c h w -> b c t h w")).latent_dist.sample()
    if hasattr(adapter.vae, "scale_"):  # the real AutoencoderKLOpenSora
        expected = adapter.vae.scale_(sample)
    else:
        expected = sample * adapter.vae.config.scaling_factor
    assert latents.shape == (2, 4, 3, 8, 12) and torch.allclose(latents, expected)


def test_loss_terms_add_up_as_novas_trainer_adds_them(adapter):
    adapter.add_lora(4, 4)
    latents, conditioning = adapter.encode_videos(clips()), adapter.encode_prompts(PROMPTS)
    seeded()
    terms = adapter.diffusion_loss(adapter.transformer, latents, conditioning)
    assert set(terms) == {"loss_t2i", "loss_i2i"}
    # NOVA's trainer: one forward on the batch dict, then the sum of the outputs named "*loss*" that carry grad.
    seeded()
    outputs = adapter.transformer({"x": latents.clone(), "prompt": list(conditioning), "motion_flow": [5, 5]})
    expected = sum(v for k, v in outputs.items() if "loss" in k and v.requires_grad)
    assert torch.allclose(sum(terms.values()), expected)


def train_steps(adapter, steps=1):
    adapter.transformer.train()
    params = [p for p in adapter.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    latents, conditioning = adapter.encode_videos(clips()), adapter.encode_prompts(PROMPTS)
    for _ in range(steps):
        sum(adapter.diffusion_loss(adapter.transformer, latents, conditioning).values()).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_full_training_keeps_novas_frozen_modules_and_trains_with_novas_checkpointing(adapter):
    adapter.enable_full_training()
    frozen = {n for n, p in adapter.transformer.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("text_embed.norm", "motion_embed")) for n in frozen)
    adapter.enable_gradient_checkpointing()
    before = {k: v.clone() for k, v in adapter.transformer.state_dict().items()}
    train_steps(adapter)
    after = adapter.transformer.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in frozen) and any(
        not torch.equal(after[k], before[k]) for k in before
    )


def test_validation_pipeline_generates_after_training_steps(adapter):
    adapter.add_lora(4, 4)
    train_steps(adapter, steps=1)
    adapter.transformer.eval()  # as the training script's validation does
    settings = GenerationSettings(num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=1)
    frames = adapter.spec.generate(adapter.pipeline(adapter.transformer), "a ball", settings)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.max() > 1 / 255  # uint8 frames scaled to [0, 1]
    train_steps(adapter, steps=1)  # and training goes on


def test_missing_diffnext_says_how_to_install_it(nova):
    spec = load_spec(nova.path)
    with diffnext_modules(), pytest.raises(ImportError, match=r"pip install \./NOVA"):
        sys.modules["diffnext"] = None  # as if it were not installed
        NOVAAdapter.from_pretrained(spec)
