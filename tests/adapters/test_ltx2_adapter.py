"""LTX-2's own rules on a tiny `LTX2Pipeline` built in code (32x / 8x VAE, patch 1, an audio stream): shape rules and
`auto` detection read from the configs, latents and prompts as `LTX2Pipeline` makes them, the flow-matching loss of
the video stream by hand, what the audio branch does with silent clips, what trains, and the training script's flag
checks (what every family does is in `test_family_contract.py`)."""

import inspect
import json
import shutil

import diffusers
import pytest
import torch
from diffusers import LTX2Pipeline

from diffusers_tsa import train_text_to_video_tsa
from diffusers_tsa.adapters import ADAPTERS, GenerationSettings, TrainingOptions, load_spec
from diffusers_tsa.adapters.ltx2 import LTX2Adapter, LTX2Spec, is_audio_parameter
from diffusers_tsa.adapters.ltx_video import LTXVideoSpec
from diffusers_tsa.cli import FlagError, flag_errors
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.integrations import student_spec
from diffusers_tsa.testing import tiny_ltx_video_components, tiny_videomae, write_test_dataset
from diffusers_tsa.testing.ltx2 import (
    TINY_LTX2_HEIGHT,
    TINY_LTX2_NUM_FRAMES,
    TINY_LTX2_WIDTH,
    tiny_ltx2_components,
)
from diffusers_tsa.training import plan_training


FRAMES, HEIGHT, WIDTH = TINY_LTX2_NUM_FRAMES, TINY_LTX2_HEIGHT, TINY_LTX2_WIDTH  # latents and tokens 2 x 2 x 3
PROMPTS = ["a red ball falls", "a white square moves right"]
SHORT = TrainingOptions(max_sequence_length=16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny LTX-2 pipeline saved to disk."""
    root = tmp_path_factory.mktemp("ltx2")
    LTX2Pipeline(**tiny_ltx2_components()).save_pretrained(root / "base")
    return root


@pytest.fixture
def adapter(tiny):
    return LTX2Adapter.from_pretrained(load_spec(tiny / "base"), options=SHORT)


def clips(batch=2, seed=0):
    return torch.rand(batch, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- Spec ------------------------------------------------------------------------------------------------------------


def test_spec_from_configs_follows_the_pipeline(tiny):
    spec = load_spec(tiny / "base")  # the family from model_index.json's `LTX2Pipeline`
    assert isinstance(spec, LTX2Spec) and ADAPTERS[spec.family] is LTX2Adapter
    pipe = LTX2Pipeline.from_pretrained(tiny / "base")  # the pipeline's own view of the same checkpoint
    assert (
        (spec.spatial_compression, spec.temporal_compression)
        == (pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio)
        == (32, 8)
    )
    assert (spec.num_blocks, spec.hidden_size, spec.text_length_multiple) == (2, 16, 4)
    assert (
        spec.token_grid(FRAMES, HEIGHT, WIDTH)
        == (2, 2, 3)
        == pipe.vae.encode(torch.zeros(1, 3, FRAMES, HEIGHT, WIDTH)).latent_dist.mode().shape[2:]
    )
    # The audio latents of a clip's duration, as `LTX2Pipeline.__call__` sizes them from its audio VAE.
    per_second = pipe.audio_sampling_rate / pipe.audio_hop_length / pipe.audio_vae_temporal_compression_ratio
    for frames in (9, 121):
        assert spec.audio_latent_frames(frames) == round(frames / 24 * per_second)
    assert spec.audio_latent_frames(121) == 126  # 121 frames at 24 fps, 25 audio latents per second
    config = pipe.audio_vae.config
    assert spec.audio_channels == config.latent_channels * config.mel_bins // pipe.audio_vae_mel_compression_ratio
    spec.check_clip(FRAMES, HEIGHT, WIDTH)
    with pytest.raises(GridError, match=r"`num_frames=12` must be 8k\+1 \(e.g. 9 or 17\); `height=80` must be"):
        spec.check_clip(12, 80, WIDTH)
    bare = student_spec(pipe.transformer)  # a transformer another trainer loaded, without its VAE
    assert (bare.family, bare.token_grid(FRAMES, HEIGHT, WIDTH), bare.audio_channels) == ("ltx2", (2, 2, 3), 8)
    big = LTX2Spec(pretrained_model_name_or_path="", num_blocks=48, hidden_size=4096, min_depth=1)
    assert big.default_depth == 29  # the paper's 18 of 30, on LTX-2's 48 blocks
    assert big.token_grid(121, 512, 768) == (16, 16, 24)


def test_options_the_pipeline_lacks_are_refused_naming_the_argument(tiny):
    spec = load_spec(tiny / "base")
    spec.check_options(training=SHORT)
    with pytest.raises(ModelLayoutError, match=r"`use_dynamic_cfg=True`: not supported by LTX-2"):
        spec.check_options(use_dynamic_cfg=True)
    with pytest.raises(ModelLayoutError, match=r"`max_sequence_length=10` must be a positive multiple of 4 \(the"):
        spec.check_options(training=TrainingOptions(max_sequence_length=10))
    settings = GenerationSettings(num_frames=121, height=512, width=768, guidance_scale=4.0)
    assert spec.pipeline_kwargs(settings) == {
        "num_frames": 121,
        "height": 512,
        "width": 768,
        "frame_rate": 24,
        "num_inference_steps": 50,
        "guidance_scale": 4.0,
        "max_sequence_length": 1024,
    }


def components(pipeline_class) -> tuple[set[str], type]:
    """A pipeline's required components and its transformer's class, from its signature."""
    parameters = inspect.signature(pipeline_class.__init__).parameters.values()
    required = {p.name for p in parameters if p.name != "self" and p.default is inspect.Parameter.empty}
    return required, inspect.signature(pipeline_class.__init__).parameters["transformer"].annotation


@pytest.mark.parametrize(
    "spec_class, stock", [(LTX2Spec, diffusers.LTX2Pipeline), (LTXVideoSpec, diffusers.LTXPipeline)]
)
def test_each_published_layout_has_the_components_of_the_pipeline_that_loads_it(spec_class, stock):
    needed, transformer = components(stock)
    for name in spec_class.detected_pipeline_class_names:
        required, other = components(getattr(diffusers, name))
        assert needed <= required and other is transformer, name


def test_auto_reads_every_published_layout(tiny, tmp_path):
    """Each `_class_name` LTX-2 and LTX-Video 0.9.5+ checkpoints are published with is read as its family."""
    ltx_video = tmp_path / "ltx_video"
    for name, component in tiny_ltx_video_components().items():
        if hasattr(component, "save_config"):
            component.save_config(ltx_video / name)
    layouts = [(LTX2Spec, tiny / "base", name) for name in LTX2Spec.detected_pipeline_class_names]
    layouts.append((LTXVideoSpec, ltx_video, "LTXConditionPipeline"))
    for spec_class, source, class_name in layouts:
        folder = tmp_path / class_name
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors"))
        index = json.loads((source / "model_index.json").read_text()) if (source / "model_index.json").exists() else {}
        (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": class_name}))
        assert type(load_spec(folder)) is spec_class, class_name


# --- Latents, prompts, loss ------------------------------------------------------------------------------------------


def test_latents_normalised_as_the_pipeline_normalises_them(adapter):
    adapter.vae.register_to_config(scaling_factor=0.7)
    mean, std = adapter.vae.latents_mean, adapter.vae.latents_std
    assert not torch.equal(mean, torch.zeros_like(mean)) and not torch.equal(std, torch.ones_like(std))
    videos = clips()
    torch.manual_seed(1)
    latents = adapter.encode_videos(videos)
    torch.manual_seed(1)
    raw = adapter.vae.encode(videos.permute(0, 2, 1, 3, 4)).latent_dist.sample()
    assert latents.shape == (2, 8, 2, 2, 3)
    assert torch.allclose(latents, LTX2Pipeline._normalize_latents(raw, mean, std, 0.7), atol=1e-6)
    assert torch.allclose(
        adapter.decode_latents(latents), adapter.vae.decode(raw).sample.permute(0, 2, 1, 3, 4).clamp(-1, 1), atol=1e-5
    )


def test_prompts_are_the_pipelines_gemma_states_through_its_connectors(tiny, adapter):
    pipe = LTX2Pipeline.from_pretrained(tiny / "base")
    embeds, mask, _, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False, max_sequence_length=16)
    assert mask.tolist()[0] == [0] * 12 + [1] * 4  # left-padded, as the pipeline pads Gemma's prompts
    video, audio, connector_mask = pipe.connectors(embeds, mask, padding_side="left")
    outputs = adapter.text_encoder_outputs(PROMPTS)
    assert torch.equal(outputs["prompt_embeds"], video) and torch.equal(outputs["audio_prompt_embeds"], audio)
    assert torch.equal(outputs["prompt_attention_mask"], connector_mask)
    assert video.shape == (2, 16, 16) and audio.shape == (2, 16, 16)
    bare = LTX2Adapter.from_pretrained(adapter.spec, options=SHORT, encoders=False, transformer=False)
    assert bare.connectors is None
    with bare.encoders_loaded():  # a validation of a run on precomputed prompts loads the connectors too
        assert torch.equal(bare.text_encoder_outputs(PROMPTS)["prompt_embeds"], video)
    assert bare.connectors is None and bare.text_encoder is None


def test_flow_matching_loss_of_the_video_stream_is_the_formula(adapter):
    transformer = adapter.transformer
    latents, conditioning = adapter.encode_videos(clips()), adapter.encode_prompts(PROMPTS)
    torch.manual_seed(3)
    loss = adapter.diffusion_loss(transformer, latents, conditioning)["diffusion"]

    # By hand: logit-normal sigma per sample; x_t = (1 - sigma) x0 + sigma noise, packed as the pipeline packs it;
    # next to it the silent clip's audio, zero latents noised at the same sigma, 9 frames (9 video frames at 24 fps);
    # t = 1000 sigma for both streams, the pipeline's positions at 24 fps; MSE of the video prediction only.
    torch.manual_seed(3)
    sigmas = torch.sigmoid(torch.normal(0.0, 1.0, size=(2,)))
    noise = torch.randn(latents.shape)
    audio_noise = torch.randn(2, 9, 8)
    s = sigmas.view(2, 1, 1, 1, 1)
    t = 1000 * sigmas
    prediction, _ = transformer(
        hidden_states=LTX2Pipeline._pack_latents((1 - s) * latents + s * noise),
        audio_hidden_states=sigmas.view(2, 1, 1) * audio_noise,
        encoder_hidden_states=conditioning.video,
        audio_encoder_hidden_states=conditioning.audio,
        timestep=t,
        sigma=t,
        encoder_attention_mask=conditioning.attention_mask,
        audio_encoder_attention_mask=conditioning.attention_mask,
        video_coords=transformer.rope.prepare_video_coords(2, 2, 2, 3, torch.device("cpu"), fps=24),
        audio_coords=transformer.audio_rope.prepare_audio_coords(2, 9, torch.device("cpu")),
        use_cross_timestep=True,
        return_dict=False,
    )
    expected = (prediction - LTX2Pipeline._pack_latents(noise - latents)).pow(2).mean()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_silent_audio_feeds_the_video_stream_but_its_prediction_is_not_trained(adapter):
    """The audio tokens reach the video tokens (audio-to-video attention): the audio input projection changes the
    loss; the audio output head does not."""
    latents, conditioning = adapter.encode_videos(clips()), adapter.encode_prompts(PROMPTS)

    def loss():
        torch.manual_seed(0)
        return adapter.diffusion_loss(adapter.transformer, latents, conditioning, timesteps=torch.tensor([500.0]))

    before = loss()["diffusion"]
    with torch.no_grad():
        adapter.transformer.audio_proj_out.weight.add_(1.0)
    assert torch.equal(loss()["diffusion"], before)
    with torch.no_grad():
        adapter.transformer.audio_proj_in.weight.add_(1.0)
    assert not torch.allclose(loss()["diffusion"], before)


def test_the_video_stream_trains_and_the_audio_stream_stays_frozen(adapter, tiny):
    adapter.enable_full_training()
    trainable = {name for name, p in adapter.transformer.named_parameters() if p.requires_grad}
    frozen = {name for name, p in adapter.transformer.named_parameters() if not p.requires_grad}
    block = "transformer_blocks.0."
    assert {f"{block}attn1.to_q.weight", f"{block}attn2.to_k.weight", f"{block}ff.net.2.weight"} <= trainable
    assert {
        "proj_in.weight",
        "proj_out.weight",
        "caption_projection.linear_1.weight",
        "scale_shift_table",
    } <= trainable
    assert {
        f"{block}audio_attn1.to_q.weight",
        f"{block}audio_to_video_attn.to_q.weight",  # the audio-video cross-attention, both ways
        f"{block}video_to_audio_attn.to_v.weight",
        f"{block}video_a2v_cross_attn_scale_shift_table",
        "audio_proj_in.weight",
        "av_cross_attn_video_a2v_gate.linear.weight",
    } <= frozen
    assert frozen == {name for name in trainable | frozen if is_audio_parameter(name)}
    lora = LTX2Adapter.from_pretrained(load_spec(tiny / "base"), options=SHORT)
    lora.add_lora(4, 4)
    adapted = {name for name, module in lora.transformer.named_modules() if hasattr(module, "lora_A")}
    assert len(adapted) == 16 and not any(is_audio_parameter(name) for name in adapted)


# --- Training script flags -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_sequence_length", "10"], r"--max_sequence_length=10 must be a positive multiple of 4"),
        (["--use_dynamic_cfg"], r"--use_dynamic_cfg=True: not supported by LTX-2"),
        (["--max_num_frames", "13"], r"--max_num_frames=13 must be 8k\+1 \(e.g. 9 or 17\)"),
    ],
)
def test_flag_errors_name_the_flag_before_loading_weights(tiny, tmp_path, flags, message):

    tiny_videomae().save_pretrained(tmp_path / "teacher")
    write_test_dataset(tmp_path / "data", num_clips=2, caption=PROMPTS[1])
    common = [
        "--pretrained_model_name_or_path", str(tiny / "base"), "--instance_data_root", str(tmp_path / "data"),
        "--caption_column", "prompts.txt", "--video_column", "videos.txt",
        "--teacher_model_name_or_path", str(tmp_path / "teacher"), "--teacher_height", "32", "--teacher_width", "48",
        "--height", str(HEIGHT), "--width", str(WIDTH), "--max_num_frames", str(FRAMES),
        "--max_sequence_length", "16", "--alignment_loss", "m-tsa", "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    with pytest.raises(FlagError, match=message), flag_errors():
        plan_training(train_text_to_video_tsa.parse_args([*common, *flags]))
