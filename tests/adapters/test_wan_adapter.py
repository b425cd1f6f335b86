"""Wan's own rules (Wan 2.1, Wan 2.2 TI2V-5B and the two-expert A14B) on tiny offline pipelines: the spec's shape
rules and checks, the training inputs and loss against hand computations, the experts' LoRA files, full fine-tune and
model card (what every family does, Wan 2.1 included, is in `test_family_contract.py`)."""

import os
import subprocess
from dataclasses import replace

import pytest
import torch
from diffusers import WanPipeline, WanTransformer3DModel
from safetensors.torch import save_file
from test_train_script import launch_command, offline_env

from diffusers_tsa.adapters import ADAPTERS, LORA_WEIGHT_NAME, GenerationSettings, TrainingOptions, load_spec
from diffusers_tsa.adapters.flow_matching import FlowMatching
from diffusers_tsa.adapters.wan import EXPERT_METADATA_KEY, WanAdapter, WanSpec, lora_expert
from diffusers_tsa.cli import translate
from diffusers_tsa.errors import CheckpointError, GridError, ModelLayoutError
from diffusers_tsa.testing import tiny_videomae, tiny_wan_components, write_test_dataset
from diffusers_tsa.testing.model_card import card_code, check_card_code
from diffusers_tsa.training.card_code import usage_code


PROMPT = "a white square moves right"
FRAMES, HEIGHT, WIDTH = 9, 64, 96  # latents 3 x 8 x 12, tokens 3 x 4 x 6; the teacher's grid is 4 x 2 x 3
SHORT = TrainingOptions(max_sequence_length=16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny Wan 2.1, Wan 2.2 A14B-like (two experts) and TI2V-5B-like pipelines, a tiny VideoMAE teacher and two
    clips, saved to disk."""
    root = tmp_path_factory.mktemp("wan")
    for name, kind in (("base", {}), ("experts", {"two_experts": True}), ("ti2v", {"ti2v": True})):
        WanPipeline(**tiny_wan_components(**kind)).save_pretrained(root / name)
    tiny_videomae().save_pretrained(root / "teacher")
    write_test_dataset(root / "data", num_clips=2, caption=PROMPT)
    return root


def adapter(tiny, name="base", **options) -> WanAdapter:
    spec = load_spec(tiny / name)
    return ADAPTERS[spec.family].from_pretrained(spec, options=replace(SHORT, **options))


def clips(batch=2, seed=0):
    return torch.rand(batch, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def generate(pipe):
    return pipe(
        PROMPT,
        num_frames=FRAMES,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=2,
        max_sequence_length=16,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).frames


# --- The spec ------------------------------------------------------------------------------------------------------


def test_the_spec_reads_grids_depth_and_experts_from_the_configs(tiny):
    spec, experts, ti2v = (load_spec(tiny / name) for name in ("base", "experts", "ti2v"))
    assert type(spec) is WanSpec and spec.family == "wan" and (spec.num_blocks, spec.hidden_size) == (2, 16)
    # Wan 2.1: VAE x8 / x4, patch 1 x 2 x 2: 9 x 64x96 -> latents 3 x 8 x 12 -> tokens 3 x 4 x 6.
    assert spec.token_grid(FRAMES, HEIGHT, WIDTH) == (3, 4, 6)
    assert spec.token_grid(81, 480, 832) == (21, 30, 52)  # the real 1.3B at its size
    # TI2V-5B's VAE patchifies 2 x 2 first: x16, read from its config.
    assert (ti2v.vae_scale, ti2v.expand_timesteps) == (16, True)
    assert ti2v.token_grid(FRAMES, HEIGHT, WIDTH) == (3, 2, 3) and ti2v.token_grid(121, 704, 1280) == (31, 22, 40)
    assert (spec.two_experts, experts.two_experts, experts.boundary_ratio) == (False, True, 0.875)
    assert (spec.fps, experts.fps, ti2v.fps) == (16, 16, 24)
    # The paper's share of the blocks, within [1, num_blocks].
    assert spec.default_depth == 1 and spec.min_depth == 1
    assert replace(spec, num_blocks=30).default_depth == 18 and replace(spec, num_blocks=40).default_depth == 24
    with pytest.raises(ModelLayoutError, match=r"`depth=3` is out of range .* \[1, 2\]"):
        spec.check_depth(3)


@pytest.mark.parametrize(
    "name, size, message",
    [
        ("base", (10, 64, 96), r"`num_frames=10` must be 4k\+1 \(e.g. 9 or 13\)"),
        ("base", (9, 72, 96), r"`height=72` must be a multiple of 16 \(VAE x8, patch 2; e.g. 64 or 80\)"),
        ("ti2v", (9, 64, 80), r"`width=80` must be a multiple of 32 \(VAE x16, patch 2; e.g. 64 or 96\)"),
    ],
)
def test_check_clip_names_the_sizes_that_work(tiny, name, size, message):
    spec = load_spec(tiny / name)
    spec.check_clip(FRAMES, HEIGHT, WIDTH)
    with pytest.raises(GridError, match=message):
        spec.check_clip(*size)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("experts", {}, r"`expert=None` names no expert of this two-expert Wan checkpoint .*`expert='low_noise'`"),
        ("experts", {"expert": "mid"}, r"`expert='mid'` is not an expert of .*`expert='high_noise'` \(transformer\)"),
        ("base", {"expert": "low_noise"}, r"`expert='low_noise'`: this wan checkpoint has one transformer"),
        ("base", {"max_sequence_length": 0}, r"`max_sequence_length=0` must be positive \(Wan's default is 512\)"),
        ("base", {"use_dynamic_cfg": True}, r"`use_dynamic_cfg=True`: WanPipeline has no dynamic guidance"),
    ],
)
def test_check_options_refuses_what_wan_cannot_train(tiny, name, options, message):
    spec = load_spec(tiny / name)
    dynamic = options.pop("use_dynamic_cfg", None)
    with pytest.raises(ModelLayoutError, match=message) as refused:
        spec.check_options(use_dynamic_cfg=dynamic, training=TrainingOptions(**options))
    flags = translate(str(refused.value))  # the training script names the flag
    assert "`" not in flags.split(":")[0] and flags.startswith("--")
    spec.check_options(training=TrainingOptions(expert="low_noise" if name == "experts" else None))


# --- Training inputs and loss --------------------------------------------------------------------------------------


def test_latents_are_the_vae_sample_normalised_per_channel(tiny):
    wan, videos = adapter(tiny), clips()
    torch.manual_seed(3)
    latents = wan.encode_videos(videos)
    torch.manual_seed(3)
    with torch.no_grad():
        sample = wan.vae.encode(videos.permute(0, 2, 1, 3, 4)).latent_dist.sample()
    mean, std = (torch.tensor(wan.vae.config[key]) for key in ("latents_mean", "latents_std"))
    assert latents.shape == (2, 8, 3, 8, 12)
    for c in range(8):
        torch.testing.assert_close(latents[:, c], (sample[:, c] - mean[c]) / std[c])


def test_prompts_are_encoded_as_the_pipeline_encodes_them(tiny):
    wan = adapter(tiny)
    pipe = WanPipeline.from_pretrained(tiny / "base")
    prompts = ["a red ball falls", "  a cat   jumps on the floor &amp; bounces "]
    with torch.no_grad():
        expected = pipe._get_t5_prompt_embeds(prompts, max_sequence_length=16, device="cpu")
    embeddings = wan.encode_prompts(prompts)
    assert embeddings.shape == (2, 16, 32)
    torch.testing.assert_close(embeddings, expected)
    assert not embeddings[0, 4:].any() and embeddings[0, :4].abs().sum(-1).all()  # 4 words, padding zeroed


def test_the_flow_matching_loss_is_the_formula(tiny):
    flow = FlowMatching(weighting_scheme="none", shift=3.0)
    wan = adapter(tiny, flow_matching=flow)
    latents, conditioning = torch.randn(2, 8, 3, 8, 12), wan.encode_prompts([PROMPT, "a ball"])
    torch.manual_seed(7)
    loss = wan.diffusion_loss(wan.transformer, latents, conditioning)["diffusion"]

    torch.manual_seed(7)  # the same draws, by hand: noise, then sigma ~ U(0, 1), shifted
    noise, u = torch.randn_like(latents), torch.rand(2)
    sigma = 3 * u / (1 + 2 * u)
    s = sigma.view(2, 1, 1, 1, 1)
    with torch.no_grad():
        prediction = wan.transformer(
            hidden_states=(1 - s) * latents + s * noise,
            timestep=1000 * sigma,
            encoder_hidden_states=conditioning,
        ).sample
    assert torch.allclose(loss, ((prediction - (noise - latents)) ** 2).mean(), rtol=1e-5)


class RecordTimesteps(torch.nn.Module):
    """The transformer, recording the `timestep` of each call."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer, self.seen = transformer, []

    def forward(self, **kwargs):
        self.seen.append(kwargs["timestep"])
        return self.transformer(**kwargs)


@pytest.mark.parametrize("expert, inside", [("low_noise", lambda t: t < 875), ("high_noise", lambda t: t >= 875)])
def test_an_expert_trains_only_on_its_side_of_the_boundary(tiny, expert, inside):
    wan = adapter(tiny, "experts", expert=expert)
    slot = "transformer_2" if expert == "low_noise" else "transformer"
    base = WanTransformer3DModel.from_pretrained(tiny / "experts", subfolder=slot)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in wan.transformer.state_dict().items())
    spy, latents = RecordTimesteps(wan.transformer), torch.randn(16, 8, 3, 4, 6)
    for _ in range(4):
        wan.diffusion_loss(spy, latents, torch.zeros(16, 16, 32))
    timesteps = torch.cat(spy.seen)
    assert timesteps.shape == (64,) and inside(timesteps).all() and timesteps.std() > 10


def test_ti2v_gives_every_token_its_sample_timestep(tiny):
    wan = adapter(tiny, "ti2v")
    spy, latents = RecordTimesteps(wan.transformer), wan.encode_videos(clips())
    wan.diffusion_loss(spy, latents, wan.encode_prompts([PROMPT, PROMPT]))
    (timesteps,) = spy.seen
    assert latents.shape == (2, 8, 3, 4, 6) and timesteps.shape == (2, 3 * 2 * 3)  # per token, as the pipeline
    assert (timesteps == timesteps[:, :1]).all() and timesteps[0, 0] != timesteps[1, 0]


# --- Saving and loading, without the script ------------------------------------------------------------------------


def train_lora_a_little(wan):
    wan.add_lora(4, 4)
    with torch.no_grad():
        for name, p in wan.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)


def test_a_low_noise_lora_goes_into_transformer_2_and_resumes_only_there(tiny, tmp_path):
    low = adapter(tiny, "experts", expert="low_noise")
    train_lora_a_little(low)
    low.save_lora_weights(tmp_path / "low", low.transformer)
    (tmp_path / "other").mkdir()
    assert lora_expert(tmp_path / "low" / LORA_WEIGHT_NAME) == "low_noise"
    one = adapter(tiny)
    train_lora_a_little(one)
    one.save_lora_weights(tmp_path / "one", one.transformer)
    assert lora_expert(tmp_path / "one" / LORA_WEIGHT_NAME) is None  # one transformer: nothing to name

    pipe = low.spec.load_trained_pipeline(lora=tmp_path / "low")
    assert not hasattr(pipe.transformer, "peft_config") and pipe.transformer_2.peft_config
    base = WanPipeline.from_pretrained(tiny / "experts")
    assert all(torch.equal(v, base.transformer.state_dict()[k]) for k, v in pipe.transformer.state_dict().items())
    stock = WanPipeline.from_pretrained(tiny / "experts")
    stock.load_lora_weights(tmp_path / "low", load_into_transformer_2=True)  # what the file's header says
    assert torch.equal(generate(stock), generate(pipe)) and not torch.equal(generate(pipe), generate(base))

    high = adapter(tiny, "experts", expert="high_noise")
    high.add_lora(4, 4)
    with pytest.raises(CheckpointError, match=r"a LoRA of the low_noise transformer, not of `expert='high_noise'`"):
        high.load_lora_weights(tmp_path / "low", high.transformer)
    other_run = {"transformer.proj_out.lora_A.weight": torch.zeros(4, 16)}
    save_file(other_run, tmp_path / "other" / LORA_WEIGHT_NAME, metadata={EXPERT_METADATA_KEY: "low_noise"})
    with pytest.raises(ModelLayoutError, match=r"does not hold this run's LoRA \(32 weights\): 32 missing"):
        low.load_lora_weights(tmp_path / "other", low.transformer)
    resumed = adapter(tiny, "experts", expert="low_noise")
    resumed.add_lora(4, 4)
    resumed.load_lora_weights(tmp_path / "low", resumed.transformer)
    trained = low.transformer.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in resumed.transformer.state_dict().items())


def test_a_low_noise_expert_refuses_a_full_fine_tune_of_the_other_transformer(tiny, tmp_path):
    wan = adapter(tiny)
    wan.save_transformer(tmp_path / "out", wan.transformer)
    low = adapter(tiny, "experts", expert="low_noise")
    with pytest.raises(CheckpointError, match=r"has no `transformer_2/` folder"):
        low.load_transformer(tmp_path / "out", low.transformer)


# --- The training script -------------------------------------------------------------------------------------------


def train(tiny, output_dir, *flags, base="base"):
    """`accelerate launch train_text_to_video_tsa.py` on the CPU on a tiny Wan, with M-TSA against the tiny teacher
    (8 frames at 32x48: a 4 x 2 x 3 grid from the 3 x 4 x 6 student grid); returns the log."""
    wan_flags = [
        "--pretrained_model_name_or_path",
        str(tiny / base),
        "--teacher_model_name_or_path",
        str(tiny / "teacher"),
        "--instance_data_root",
        str(tiny / "data"),
        "--caption_column",
        "prompts.txt",
        "--video_column",
        "videos.txt",
        "--height",
        str(HEIGHT),
        "--width",
        str(WIDTH),
        "--max_num_frames",
        str(FRAMES),
        "--teacher_num_frames",
        "8",
        "--teacher_height",
        "32",
        "--teacher_width",
        "48",
        "--max_sequence_length",
        "16",
        "--alignment_depth",
        "1",
        "--projector_hidden_dim",
        "16",
        "--rank",
        "4",
        "--lora_alpha",
        "4",
        "--train_batch_size",
        "1",
        "--learning_rate",
        "1e-2",
        "--lr_warmup_steps",
        "0",
        "--seed",
        "0",
        "--report_to",
        "none",
        "--validation_num_inference_steps",
        "2",
        "--output_dir",
        str(output_dir),
        *flags,
    ]
    command = launch_command(tiny, output_dir, *wan_flags, common=False)
    result = subprocess.run(command, capture_output=True, text=True, env=offline_env(), timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


def test_a_full_run_of_the_low_noise_expert_changes_only_transformer_2(tiny, tmp_path):
    out = tmp_path / "out"
    log = train(
        tiny,
        out,
        "--training_mode",
        "full",
        "--expert",
        "low_noise",
        "--learning_rate",
        "1e-3",
        "--max_train_steps",
        "1",
        "--validation_prompt",
        PROMPT,
        "--validation_steps",
        "1",
        base="experts",
    )
    assert "Model family = wan, training mode = full" in log
    assert (out / "validation" / "step-1-0-0.mp4").is_file() and (out / "validation" / "final-0-0.mp4").is_file()
    assert (out / "transformer_2" / "config.json").is_file() and not (out / "transformer").exists()

    base = WanPipeline.from_pretrained(tiny / "experts")
    pipe = load_spec(tiny / "experts").load_trained_pipeline(transformer=out)  # the script's and eval's way
    untouched, trained = base.transformer.state_dict(), pipe.transformer_2.state_dict()
    assert all(torch.equal(v, untouched[k]) for k, v in pipe.transformer.state_dict().items())
    assert any(not torch.equal(v, base.transformer_2.state_dict()[k]) for k, v in trained.items())
    stock = WanPipeline.from_pretrained(
        tiny / "experts", transformer_2=WanTransformer3DModel.from_pretrained(out, subfolder="transformer_2")
    )
    assert torch.equal(generate(stock), generate(pipe)) and not torch.allclose(generate(pipe), generate(base))


# --- Evaluation and the model card ---------------------------------------------------------------------------------


def test_the_model_card_code_runs_for_a_low_noise_lora(tiny, tmp_path):
    """Stock `WanPipeline` code, on the output folder and on the Hub repository alike; the training run's spec knows
    its expert (`for_training`), so a low-noise LoRA goes into `transformer_2` (one transformer's card: see
    `test_family_contract.py`)."""
    settings = GenerationSettings(FRAMES, HEIGHT, WIDTH, num_inference_steps=2, max_sequence_length=16)
    wan = adapter(tiny, "experts", expert="low_noise")
    check_card_code(wan, "lora", settings, tmp_path)
    code = card_code(tmp_path / "out" / "README.md")
    assert "pipe.load_lora_weights(" in code and "load_spec" not in code and "max_sequence_length=16" in code
    assert "load_into_transformer_2=True" in code
    one = usage_code(load_spec(tiny / "base"), "out", "lora", PROMPT, settings)
    assert (
        "pipe.load_lora_weights(" in one and "max_sequence_length=16" in one and "load_into_transformer_2" not in one
    )


@pytest.mark.parametrize("folder", ["base", "experts"])  # the stock code, and the code through the spec
def test_the_card_code_names_local_folders_by_absolute_paths(tiny, tmp_path, monkeypatch, folder):
    """Paths typed relative to the training folder work from any folder in the card's code; Hub ids stay ids."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    spec = load_spec(os.path.relpath(tiny / folder, tmp_path))
    code = usage_code(spec, "out", "lora", PROMPT, GenerationSettings(FRAMES, HEIGHT, WIDTH))
    assert f'"{tiny / folder}"' in code and f'"{tmp_path / "out"}"' in code
    hub = usage_code(spec, "someone/tsa-lora", "lora", PROMPT, GenerationSettings(FRAMES, HEIGHT, WIDTH))
    assert '"someone/tsa-lora"' in hub


def test_a_two_expert_card_without_the_expert_loads_through_the_spec(tiny):
    code = usage_code(load_spec(tiny / "experts"), "out", "full", PROMPT, GenerationSettings(FRAMES, HEIGHT, WIDTH))
    assert "load_spec(" in code and ".load_trained_pipeline(" in code and "transformer=" in code
    known = load_spec(tiny / "experts").for_training(TrainingOptions(expert="low_noise"))
    code = usage_code(known, "out", "full", PROMPT, GenerationSettings(FRAMES, HEIGHT, WIDTH))
    assert 'subfolder="transformer_2"' in code and "transformer_2=transformer" in code
    assert known.saved_files("full") == ("transformer_2/config.json",)
