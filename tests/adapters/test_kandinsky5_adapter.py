"""Kandinsky 5's own rules on a tiny `Kandinsky5T2VPipeline` built in code (HunyuanVideo VAE x8 / x4, patch 1 x 2 x 2,
Qwen2.5-VL + CLIP): shape rules read from the configs, latents scaled as the pipeline scales them, prompts encoded as
the pipeline encodes them, the flow-matching loss by hand and the training script's flag checks (what every family
does is in `test_family_contract.py`)."""

import pytest
import torch
from diffusers import Kandinsky5T2VPipeline
from einops import rearrange

from diffusers_tsa import train_text_to_video_tsa
from diffusers_tsa.adapters import ADAPTERS, GenerationSettings, TrainingOptions, load_spec
from diffusers_tsa.adapters.flow_matching import FlowMatching
from diffusers_tsa.adapters.kandinsky5 import Kandinsky5Adapter, Kandinsky5Spec
from diffusers_tsa.cli import FlagError, flag_errors
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.testing import tiny_videomae, write_test_dataset
from diffusers_tsa.testing.kandinsky5 import (
    TINY_KANDINSKY5_HEIGHT,
    TINY_KANDINSKY5_NUM_FRAMES,
    TINY_KANDINSKY5_WIDTH,
    tiny_kandinsky5_components,
)
from diffusers_tsa.training import plan_training


FRAMES, HEIGHT, WIDTH = TINY_KANDINSKY5_NUM_FRAMES, TINY_KANDINSKY5_HEIGHT, TINY_KANDINSKY5_WIDTH
PROMPTS = ["a red ball falls", "a white square moves right"]
#: Kandinsky 5.0 T2V Lite's transformer config (the `kandinskylab/Kandinsky-5.0-T2V-Lite-*-Diffusers` checkpoints).
LITE = {"num_visual_blocks": 32, "model_dim": 1792, "patch_size": [1, 2, 2], "visual_cond": True}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny Kandinsky 5 pipeline saved to disk."""
    root = tmp_path_factory.mktemp("kandinsky5") / "base"
    Kandinsky5T2VPipeline(**tiny_kandinsky5_components()).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def adapter(base):
    return Kandinsky5Adapter.from_pretrained(load_spec(base), options=TrainingOptions(max_sequence_length=16))


@pytest.fixture(scope="module")
def pipe(adapter):
    return adapter.pipeline(adapter.transformer)


def clips(batch=2, seed=0):
    return torch.rand(batch, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- Spec ------------------------------------------------------------------------------------------------------------


def test_family_and_spec_from_configs(adapter, pipe):
    spec = load_spec(adapter.spec.pretrained_model_name_or_path)  # the family from `Kandinsky5T2VPipeline`
    assert isinstance(spec, Kandinsky5Spec) and ADAPTERS[spec.family] is Kandinsky5Adapter
    assert (spec.spatial_compression, spec.temporal_compression) == (
        pipe.vae_scale_factor_spatial,
        pipe.vae_scale_factor_temporal,
    )
    assert (spec.num_blocks, spec.hidden_size, spec.patch_size, spec.visual_cond) == (2, 32, (1, 2, 2), True)
    latents = pipe.vae.encode(torch.zeros(1, 3, FRAMES, HEIGHT, WIDTH)).latent_dist.mode()
    f, h, w = latents.shape[2:]
    assert spec.token_grid(FRAMES, HEIGHT, WIDTH) == (f, h // 2, w // 2) == (3, 2, 3)
    spec.check_clip(FRAMES, HEIGHT, WIDTH)


def test_lite_and_pro_grids_and_default_depths():
    lite = Kandinsky5Spec.from_model_configs("lite", LITE, None, {})
    assert (lite.num_blocks, lite.hidden_size, lite.default_depth) == (32, 1792, 19)  # round(0.6 * 32)
    assert lite.token_grid(121, 512, 768) == (31, 32, 48)  # 5 s at 24 fps: latents 31 x 64 x 96
    pro = Kandinsky5Spec.from_model_configs("pro", {**LITE, "num_visual_blocks": 60, "model_dim": 4096}, None, {})
    assert (pro.num_blocks, pro.default_depth) == (60, 36)
    with pytest.raises(ModelLayoutError, match=r"`depth=33` is out of range .* \[1, 32\]"):
        lite.check_depth(33)
    with pytest.raises(GridError, match=r"`num_frames=120` must be 4k\+1 \(e.g. 117 or 121\)"):
        lite.check_clip(120, 512, 768)
    with pytest.raises(GridError, match=r"`height=500` must be a multiple of 16 \(e.g. 496 or 512\)"):
        lite.check_clip(121, 500, 768)


def test_rope_scale_is_the_pipelines(pipe):
    for height, width in ((512, 768), (480, 854), (32, 48), (1024, 1024), (512, 1280)):
        assert Kandinsky5Spec.rope_scale(height, width) == pipe._get_scale_factor(height, width)


def test_options_the_pipeline_lacks_are_refused_naming_the_argument():
    spec = Kandinsky5Spec.from_model_configs("lite", LITE, None, {})
    spec.check_options(training=TrainingOptions(max_sequence_length=256, flow_matching=FlowMatching(shift=5.0)))
    with pytest.raises(ModelLayoutError, match=r"`use_dynamic_cfg=True`: not supported by Kandinsky 5"):
        spec.check_options(use_dynamic_cfg=True)
    with pytest.raises(ModelLayoutError, match=r"`max_sequence_length=2000` must be in \[1, 1024\] .* uses 512"):
        spec.check_options(training=TrainingOptions(max_sequence_length=2000))
    settings = GenerationSettings(num_frames=121, height=512, width=768, guidance_scale=5.0)
    assert spec.pipeline_kwargs(settings) == {
        "num_frames": 121,
        "height": 512,
        "width": 768,
        "num_inference_steps": 50,
        "guidance_scale": 5.0,
        "max_sequence_length": 512,
    }


# --- Latents, prompts, loss ------------------------------------------------------------------------------------------


def test_latents_are_the_vae_sample_scaled_as_the_pipeline_unscales_them(adapter, pipe):
    scaling = pipe.vae.config.scaling_factor
    assert scaling == 0.476986
    videos = clips()
    torch.manual_seed(1)
    latents = adapter.encode_videos(videos)
    torch.manual_seed(1)
    raw = adapter.vae.encode(videos.permute(0, 2, 1, 3, 4)).latent_dist.sample()
    assert latents.shape == (2, 4, 3, 4, 6)
    assert torch.allclose(latents, raw * scaling, atol=1e-6)
    # The pipeline decodes `latents / scaling_factor`: the adapter's decoding is the same.
    decoded = pipe.vae.decode(latents[:1] / scaling).sample.clamp(-1, 1)
    assert torch.allclose(adapter.decode_latents(latents[:1]), rearrange(decoded, "b c t h w -> b t c h w"), atol=1e-5)


def test_prompts_are_encoded_as_the_pipeline_encodes_the_batch(adapter, pipe):
    outputs = adapter.text_encoder_outputs(PROMPTS)
    assert outputs["prompt_embeds"].shape == (2, 16, 32) and outputs["pooled_prompt_embeds"].shape == (2, 16)
    # The tiny tokenizer's template and first word fill the 128 dropped tokens: 3 words + 3 closing tokens are kept.
    assert outputs["prompt_attention_mask"].sum(1).tolist() == [6, 7]
    conditioning = adapter.conditioning(outputs)
    embeds, pooled, cu_seqlens = pipe.encode_prompt(PROMPTS, max_sequence_length=16, device=torch.device("cpu"))
    assert conditioning.embeds.shape == embeds.shape == (2, 7, 32)  # the batch's longest prompt
    assert torch.allclose(conditioning.embeds, embeds, atol=1e-5) and torch.equal(conditioning.pooled, pooled)
    # The pipeline's `cu_seqlens` are the prompts' lengths; the transformer takes only the longest (`text_rope_pos`).
    assert cu_seqlens.diff().tolist() == outputs["prompt_attention_mask"].sum(1).tolist()
    # An adapter made of a loaded stock pipeline (`python -m diffusers_tsa.visualize`) holds both encoders too.
    stock = Kandinsky5Adapter(adapter.spec, **Kandinsky5Adapter.pipeline_components(pipe), options=adapter.options)
    assert torch.equal(stock.conditioning(stock.text_encoder_outputs(PROMPTS)).embeds, conditioning.embeds)
    # A prompt longer than the text length is cut as the pipeline cuts it, and counted.
    long = ["a red ball falls on the floor and bounces to the left and the right of the blue cat"]
    cut = adapter.conditioning(adapter.text_encoder_outputs(long))
    embeds, pooled, _ = pipe.encode_prompt(long, max_sequence_length=16, device=torch.device("cpu"))
    assert cut.embeds.shape == embeds.shape == (1, 16, 32)
    assert torch.allclose(cut.embeds, embeds, atol=1e-5) and torch.equal(cut.pooled, pooled)
    assert adapter.truncated_captions.count >= 1


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_flow_matching_loss_is_the_formula(base, shift):
    options = TrainingOptions(max_sequence_length=16, flow_matching=FlowMatching(shift=shift))
    adapter = Kandinsky5Adapter.from_pretrained(load_spec(base), options=options)
    transformer = adapter.transformer
    latents = torch.randn(2, 4, 3, 4, 6, generator=torch.Generator().manual_seed(0))  # (B, C, F, H, W)
    conditioning = adapter.encode_prompts(PROMPTS)
    seen = {}

    def record(name):
        def hook(module, args):
            seen.setdefault(name, args[0])  # returns None: the inputs stay as they are

        return hook

    hooks = [
        transformer.visual_transformer_blocks[0].register_forward_pre_hook(record("tokens")),
        transformer.time_embeddings.register_forward_pre_hook(record("time")),
    ]
    torch.manual_seed(3)
    loss = adapter.diffusion_loss(transformer, latents, conditioning)["diffusion"]
    for hook in hooks:
        hook.remove()

    # By hand: logit-normal sigma per sample, shifted; x_t = (1 - sigma) x0 + sigma noise, channels-last with the
    # zero image condition and mask (visual_cond); t = 1000 sigma; the pipeline's RoPE positions and its scale at
    # 32x48 (outside 480..854: 3.16); MSE against noise - x0 (unit weights).
    torch.manual_seed(3)
    u = torch.sigmoid(torch.normal(0.0, 1.0, size=(2,)))
    sigmas = shift * u / (1 + (shift - 1) * u)
    noise = torch.randn(latents.shape)
    s = sigmas.view(2, 1, 1, 1, 1)
    noisy = ((1 - s) * latents + s * noise).permute(0, 2, 3, 4, 1)
    hidden = torch.cat([noisy, torch.zeros_like(noisy), torch.zeros(*noisy.shape[:-1], 1)], dim=-1)
    assert hidden.shape == (2, 3, 4, 6, 9)  # 2 C + 1 channels, the transformer's visual_embed_dim
    prediction = transformer(
        hidden_states=hidden,
        encoder_hidden_states=conditioning.embeds,
        pooled_projections=conditioning.pooled,
        timestep=1000 * sigmas,
        visual_rope_pos=[torch.arange(3), torch.arange(2), torch.arange(3)],
        text_rope_pos=torch.arange(conditioning.embeds.shape[1]),
        scale_factor=(1, 3.16, 3.16),
    ).sample
    expected = (prediction - (noise - latents).permute(0, 2, 3, 4, 1)).pow(2).mean()
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert torch.allclose(seen["time"], 1000 * sigmas)
    # What the visual blocks received: the patch embedding of the noisy input, flattened frame-major.
    assert torch.allclose(seen["tokens"], transformer.visual_embeddings(hidden).flatten(1, 3), atol=1e-6)


# --- Training script flags -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--alignment_depth", "3"], r"--alignment_depth=3 is out of range .* \[1, 2\]"),
        (["--height", "40"], r"--height=40 must be a multiple of 16 \(e.g. 32 or 48\)"),
        (["--use_dynamic_cfg"], r"--use_dynamic_cfg=True: not supported by Kandinsky 5"),
    ],
)
def test_flag_errors_name_the_flag_before_loading_weights(base, tmp_path, flags, message):
    tiny_videomae().save_pretrained(tmp_path / "teacher")
    write_test_dataset(tmp_path / "data", num_clips=1, caption=PROMPTS[0])
    common = [
        "--pretrained_model_name_or_path", str(base), "--instance_data_root", str(tmp_path / "data"),
        "--caption_column", "prompts.txt", "--video_column", "videos.txt",
        "--teacher_model_name_or_path", str(tmp_path / "teacher"), "--height", str(HEIGHT), "--width", str(WIDTH),
        "--max_num_frames", str(FRAMES), "--alignment_depth", "1", "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    with pytest.raises(FlagError, match=message), flag_errors():
        plan_training(train_text_to_video_tsa.parse_args([*common, *flags]))
