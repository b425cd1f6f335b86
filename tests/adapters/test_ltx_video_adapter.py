"""LTX-Video's own rules on a tiny `LTXPipeline` built in code (32x / 8x VAE, patch 1): shape rules read from the
configs, latents and tokens as `LTXPipeline` makes them, the flow-matching loss and the training script's flag checks
(what every family does is in `test_family_contract.py`)."""

import json

import pytest
import torch
from diffusers import AutoencoderKLLTXVideo, LTXPipeline, LTXVideoTransformer3DModel
from einops import rearrange

from diffusers_tsa.adapters import ADAPTERS, GenerationSettings, TrainingOptions, load_spec
from diffusers_tsa.adapters.flow_matching import FlowMatching
from diffusers_tsa.adapters.ltx_video import LTXVideoAdapter, LTXVideoSpec, pack_latents
from diffusers_tsa.cli import FlagError, flag_errors
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.testing import tiny_videomae, write_test_dataset
from diffusers_tsa.testing.ltx_video import (
    TINY_LTX_HEIGHT,
    TINY_LTX_NUM_FRAMES,
    TINY_LTX_WIDTH,
    tiny_ltx_video_components,
)
from diffusers_tsa.training import plan_training


FRAMES, HEIGHT, WIDTH = TINY_LTX_NUM_FRAMES, TINY_LTX_HEIGHT, TINY_LTX_WIDTH  # latents and tokens 2 x 2 x 3
PROMPTS = ["a red ball falls", "a white square moves right"]
PROMPT = "a white square moves right"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny LTX-Video pipeline, the tiny VideoMAE teacher (8 frames at 32x48: a 4 x 2 x 3 grid, time x4 from the
    student's 1 x 2 x 3 after latent frame 0) and two 12-frame clips, saved to disk."""
    root = tmp_path_factory.mktemp("ltx")
    LTXPipeline(**tiny_ltx_video_components()).save_pretrained(root / "base")
    tiny_videomae().save_pretrained(root / "teacher")
    write_test_dataset(root / "data", num_clips=2, caption=PROMPT)
    return root


@pytest.fixture
def adapter(tiny):
    return LTXVideoAdapter.from_pretrained(load_spec(tiny / "base"))


def clips(batch=2, seed=0):
    return torch.rand(batch, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- Spec ------------------------------------------------------------------------------------------------------------


def test_family_and_spec_from_configs(tiny):
    spec = load_spec(tiny / "base")  # the family from model_index.json's `LTXPipeline`
    assert isinstance(spec, LTXVideoSpec) and ADAPTERS[spec.family] is LTXVideoAdapter
    pipe = LTXPipeline(**tiny_ltx_video_components())  # the pipeline's own view of the same checkpoint
    assert (
        (spec.spatial_compression, spec.temporal_compression)
        == (pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio)
        == (32, 8)
    )
    assert (spec.num_blocks, spec.hidden_size, spec.min_depth) == (2, 32, 1)
    assert (
        spec.token_grid(FRAMES, HEIGHT, WIDTH)
        == (2, 2, 3)
        == pipe.vae.encode(torch.zeros(1, 3, FRAMES, HEIGHT, WIDTH)).latent_dist.mode().shape[2:]
    )
    spec.check_clip(FRAMES, HEIGHT, WIDTH)
    assert spec.default_depth == 1  # round(0.6 * 2)


def test_compression_is_read_from_the_vae_config_not_assumed(tmp_path):
    """A VAE that compresses 4x in space and time (diffusers' own test VAE): the grid follows it, and sizes must
    still be multiples of 32, as `LTXPipeline` asks."""
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1,) * 5,
        decoder_layers_per_block=(1,) * 5,
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        patch_size=1,
    )
    vae.save_config(tmp_path / "vae")
    LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, num_layers=28, num_attention_heads=2, attention_head_dim=8
    ).save_config(tmp_path / "transformer")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "LTXPipeline"}))
    spec = load_spec(tmp_path)
    assert (
        (spec.spatial_compression, spec.temporal_compression)
        == (vae.spatial_compression_ratio, vae.temporal_compression_ratio)
        == (4, 4)
    )
    assert spec.token_grid(9, 32, 64) == (3, 8, 16)
    spec.check_clip(9, 32, 64)
    with pytest.raises(GridError, match=r"`height=36` must be a multiple of 32 \(VAE x4, .* e.g. 32 or 64\)"):
        spec.check_clip(9, 36, 64)
    # 28 blocks, as LTX-Video 2B: the paper's share of the depth (18 of 30) is block 17.
    assert spec.default_depth == 17
    spec.check_depth(28)
    with pytest.raises(ModelLayoutError, match=r"`depth=29` is out of range .* \[1, 28\]"):
        spec.check_depth(29)


def test_clip_rules_name_the_sizes_that_work():
    spec = LTXVideoSpec(pretrained_model_name_or_path="", num_blocks=28, hidden_size=2048, min_depth=1)
    assert spec.token_grid(121, 512, 768) == (16, 16, 24)  # LTX-Video 0.9.x: 32x VAE, 8x in time, patch 1
    spec.check_clip(121, 512, 768)
    with pytest.raises(GridError, match=r"`num_frames=120` must be 8k\+1 \(e.g. 113 or 121\)"):
        spec.check_clip(120, 512, 768)
    with pytest.raises(GridError, match=r"`height=500` must be a multiple of 32 .*e.g. 480 or 512\); `width=16`"):
        spec.check_clip(121, 500, 16)


def test_options_the_pipeline_lacks_are_refused_naming_the_argument():
    spec = LTXVideoSpec(pretrained_model_name_or_path="", num_blocks=28, hidden_size=2048, min_depth=1)
    spec.check_options(
        use_dynamic_cfg=False,
        vae_slicing=True,
        vae_tiling=True,
        training=TrainingOptions(max_sequence_length=256, flow_matching=FlowMatching(shift=3.0)),
    )
    with pytest.raises(ModelLayoutError, match=r"`use_dynamic_cfg=True`: not supported by LTX-Video"):
        spec.check_options(use_dynamic_cfg=True)
    with pytest.raises(ModelLayoutError, match=r"`max_sequence_length=0` must be positive .* uses 128"):
        spec.check_options(training=TrainingOptions(max_sequence_length=0))
    with pytest.raises(ModelLayoutError, match=r"`expert='high_noise'`"):
        spec.check_options(training=TrainingOptions(expert="high_noise"))
    settings = GenerationSettings(num_frames=121, height=512, width=768, guidance_scale=3.0)
    assert spec.pipeline_kwargs(settings) == {
        "num_frames": 121,
        "height": 512,
        "width": 768,
        "frame_rate": 25,
        "num_inference_steps": 50,
        "guidance_scale": 3.0,
        "max_sequence_length": 128,
    }


# --- Latents, tokens, loss -------------------------------------------------------------------------------------------


def test_latents_normalised_as_the_pipeline_normalises_them(adapter):
    adapter.vae.register_to_config(scaling_factor=0.7)
    mean, std = adapter.vae.latents_mean, adapter.vae.latents_std
    assert not torch.equal(mean, torch.zeros_like(mean)) and not torch.equal(std, torch.ones_like(std))
    videos = clips()
    torch.manual_seed(1)
    latents = adapter.encode_videos(videos)
    torch.manual_seed(1)
    raw = adapter.vae.encode(videos.permute(0, 2, 1, 3, 4)).latent_dist.sample()
    by_hand = torch.stack([(raw[:, c] - mean[c]) * 0.7 / std[c] for c in range(raw.shape[1])], dim=1)
    assert latents.shape == (2, 8, 2, 2, 3)
    assert torch.allclose(latents, by_hand, atol=1e-6)
    assert torch.allclose(latents, LTXPipeline._normalize_latents(raw, mean, std, 0.7), atol=1e-6)


def test_prompts_padded_and_masked_as_the_pipeline_does(adapter):
    pipe = adapter.pipeline(adapter.transformer)
    expected, mask = pipe._get_t5_prompt_embeds(PROMPTS, max_sequence_length=128, device=torch.device("cpu"))
    conditioning = adapter.encode_prompts(PROMPTS)
    assert torch.equal(conditioning.embeds, expected) and torch.equal(conditioning.attention_mask, mask)
    assert conditioning.attention_mask.sum(1).tolist() == [4, 5]  # the words; the rest is padding
    short = LTXVideoAdapter.from_pretrained(adapter.spec, options=TrainingOptions(max_sequence_length=16))
    assert short.encode_prompts(PROMPTS).embeds.shape == (2, 16, 32)


def test_tokens_are_frame_major_as_the_pipeline_packs_them(adapter):
    f, h, w = adapter.spec.token_grid(17, 96, 128)  # 3 x 3 x 4
    latents = torch.randn(2, 8, f, h, w)
    packed = pack_latents(latents)
    assert torch.equal(packed, LTXPipeline._pack_latents(latents, 1, 1))
    # Token n of sample b is (frame, row, column) = (n // (h w), n // w % h, n % w): every frame's tokens together,
    # which is how the projector reads them with the spec's grid.
    for n in range(f * h * w):
        assert torch.equal(packed[:, n], latents[:, :, n // (h * w), n // w % h, n % w])
    assert torch.equal(rearrange(packed, "b (f h w) c -> b c f h w", f=f, h=h, w=w), latents)
    # The transformer gives token n the RoPE position of that same (frame, row, column).
    coords = adapter.transformer.rope._prepare_video_coords(1, f, h, w, None, torch.device("cpu"))
    grid = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    assert torch.equal(coords[0], grid.reshape(-1, 3).float())


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_matching_loss_is_the_formula(tiny, shift):
    options = TrainingOptions(flow_matching=FlowMatching(shift=shift))
    adapter = LTXVideoAdapter.from_pretrained(load_spec(tiny / "base"), options=options)
    transformer = adapter.transformer
    latents, conditioning = adapter.encode_videos(clips()), adapter.encode_prompts(PROMPTS)
    seen = []
    hook = transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["hidden_states"]), with_kwargs=True
    )
    torch.manual_seed(3)
    loss = adapter.diffusion_loss(transformer, latents, conditioning)["diffusion"]

    # By hand: logit-normal sigma per sample, shifted; x_t = (1 - sigma) x0 + sigma noise; t = 1000 sigma; the
    # pipeline's packing and RoPE scale (8 latent frames per 25 fps); MSE against noise - x0 (unit weights).
    torch.manual_seed(3)
    u = torch.sigmoid(torch.normal(0.0, 1.0, size=(2,)))
    sigmas = shift * u / (1 + (shift - 1) * u)
    noise = torch.randn(latents.shape)
    s = sigmas.view(2, 1, 1, 1, 1)
    noisy = LTXPipeline._pack_latents((1 - s) * latents + s * noise)
    prediction = transformer(
        hidden_states=noisy,
        encoder_hidden_states=conditioning.embeds,
        timestep=1000 * sigmas,
        encoder_attention_mask=conditioning.attention_mask,
        num_frames=2,
        height=2,
        width=3,
        rope_interpolation_scale=(8 / 25, 32, 32),
        return_dict=False,
    )[0]
    hook.remove()
    expected = (prediction - LTXPipeline._pack_latents(noise - latents)).pow(2).mean()
    assert torch.allclose(loss, expected, rtol=1e-5)
    # What the blocks received is the pipeline's packing of the noisy latents.
    assert torch.allclose(seen[0], transformer.proj_in(noisy), atol=1e-6)


# --- Training script flags -------------------------------------------------------------------------------------------


def script_flags(tiny, output_dir):
    """The training script's flags for the tiny pipeline, teacher (integer ratios to the student) and clips."""
    return [
        "--pretrained_model_name_or_path",
        str(tiny / "base"),
        "--instance_data_root",
        str(tiny / "data"),
        "--caption_column",
        "prompts.txt",
        "--video_column",
        "videos.txt",
        "--teacher_model_name_or_path",
        str(tiny / "teacher"),
        "--teacher_height",
        "32",
        "--teacher_width",
        "48",
        "--height",
        str(HEIGHT),
        "--width",
        str(WIDTH),
        "--max_num_frames",
        str(FRAMES),
        "--max_sequence_length",
        "16",
        "--alignment_loss",
        "m-tsa",
        "--alignment_depth",
        "1",
        "--train_batch_size",
        "2",
        "--rank",
        "4",
        "--lora_alpha",
        "4",
        "--projector_hidden_dim",
        "16",
        "--learning_rate",
        "1e-2",
        "--seed",
        "0",
        "--report_to",
        "none",
        "--lr_warmup_steps",
        "0",
        "--output_dir",
        str(output_dir),
    ]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_num_frames", "13"], r"--max_num_frames=13 must be 8k\+1 \(e.g. 9 or 17\)"),
        (["--height", "80"], r"--height=80 must be a multiple of 32 .*e.g. 64 or 96"),
        (["--use_dynamic_cfg"], r"--use_dynamic_cfg=True: not supported by LTX-Video"),
        (["--max_sequence_length", "0"], r"--max_sequence_length=0 must be positive"),
        (["--alignment_depth", "3"], r"--alignment_depth=3 is out of range .* \[1, 2\]"),
    ],
)
def test_flag_errors_name_the_flag_before_loading_weights(tiny, tmp_path, flags, message):
    from diffusers_tsa import train_text_to_video_tsa as script

    with pytest.raises(FlagError, match=message), flag_errors():
        plan_training(script.parse_args([*script_flags(tiny, tmp_path / "out"), *flags]))
