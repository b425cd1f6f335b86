"""The NOVA adapter against the test double of `NOVATransformer3DModel` and, when `diffnext` is installed, against
the real package (the same checks, on a tiny NOVA built from small registered widths)."""

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange
from nova_double import install_diffnext_double, save_tiny_nova_pipeline, save_tiny_real_nova_pipeline
from test_model_card import check_card_code, run_card_code

from diffusers_tsa.adapters import ADAPTERS, GenerationSettings, load_spec
from diffusers_tsa.adapters.nova import NOVAAdapter, NOVASpec, load_nova_lora
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.testing import tiny_videomae, write_test_dataset


TESTS = Path(__file__).resolve().parent
SCRIPT = TESTS.parent / "train_text_to_video_tsa.py"
HAS_DIFFNEXT = importlib.util.find_spec("diffnext") is not None
FRAMES, HEIGHT, WIDTH = 9, 64, 96  # latents 3 x 8 x 12, image tokens 3 x 4 x 6, 6 video-encoder tokens per frame
PROMPTS = ["a red ball falls", "a white square moves right"]


@contextlib.contextmanager
def diffnext_modules():
    """Imports of `diffnext` inside the block start afresh, and are forgotten after it."""

    def ours():
        return [name for name in sys.modules if name.split(".")[0] == "diffnext"]

    saved = {name: sys.modules.pop(name) for name in ours()}
    try:
        yield
    finally:
        for name in ours():
            del sys.modules[name]
        sys.modules.update(saved)


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
    root = tmp_path_factory.mktemp(request.param)
    site = install_diffnext_double(root / "site") if request.param == "double" else None
    with diffnext_modules():
        if site:
            sys.path.insert(0, str(site))
        try:
            builder = save_tiny_nova_pipeline if request.param == "double" else save_tiny_real_nova_pipeline
            yield {"kind": request.param, "path": builder(root / "base"), "site": site}
        finally:
            if site:
                sys.path.remove(str(site))


def launched_env(nova) -> dict:
    """The environment of a process a test launches: offline, `nova_double` (and the double's `diffnext`) importable."""
    paths = [nova["site"]] if nova["site"] else []
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(map(str, [*paths, TESTS, TESTS.parent])),
    }


def launcher(nova) -> list[str]:
    """What goes before a Python file run by a process a test launches (after `python` or `accelerate launch`): on
    the real package, `-m nova_double.with_tiny_archs`, which registers the tiny archs first, as NOVA's configs
    register its own."""
    return ["-m", "nova_double.with_tiny_archs"] if nova["kind"] == "real" else []


@pytest.fixture
def adapter(nova):
    adapter = NOVAAdapter.from_pretrained(load_spec(nova["path"]))
    adapter.transformer.train()  # as the training loop does: NOVA's forward is its training step in train mode
    return adapter


def clips(batch=2, seed=0):
    return torch.rand(batch, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seeded(seed=0):
    torch.manual_seed(seed)
    np.random.seed(seed)


def test_family_and_spec_from_configs(nova):
    spec = load_spec(nova["path"])
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


def test_features_have_the_grid_are_copied_and_carry_gradients(adapter):
    adapter.add_lora(4, 4)
    latents, conditioning = adapter.encode_videos(clips()), adapter.encode_prompts(PROMPTS)
    depth, received = 3, {}
    # What the next block receives is what block `depth` returned, untouched by anything after the hook.
    handle = adapter.transformer.image_encoder.blocks[depth].register_forward_pre_hook(
        lambda module, args: received.setdefault("x", args[0].detach().clone())
    )
    extractor = adapter.feature_extractor(adapter.transformer, depth)
    with extractor.capture() as captured:
        terms = adapter.diffusion_loss(adapter.transformer, latents, conditioning)
    handle.remove()
    tokens = adapter.alignment_tokens(captured.hidden_states, batch_size=2)
    f, h, w = adapter.spec.token_grid(FRAMES, HEIGHT, WIDTH)
    assert tokens.shape == (2, f * h * w, adapter.spec.hidden_size)
    # Sequence b * F + f holds frame f of sample b: its P video-encoder tokens, then its h * w image tokens.
    prefix = received["x"].shape[1] - h * w
    for b in range(2):
        for frame in range(f):
            block = tokens[b, frame * h * w : (frame + 1) * h * w].detach()
            assert torch.equal(block, received["x"][b * f + frame, prefix:])

    tokens.pow(2).mean().backward(retain_graph=True)
    grads = {n: p.grad for n, p in adapter.transformer.named_parameters() if "lora_B" in n}
    assert grads and all(n.split(".")[0] in ("video_encoder", "image_encoder") for n in grads)
    for name, grad in grads.items():
        block = int(name.split("blocks.")[1].split(".")[0])
        reaches = name.startswith("video_encoder") or block < depth
        assert (grad is not None and grad.abs().sum() > 0) == reaches, name
    sum(terms.values()).backward()
    extractor.remove()


def train_steps(adapter, steps=1):
    adapter.transformer.train()
    params = [p for p in adapter.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    latents, conditioning = adapter.encode_videos(clips()), adapter.encode_prompts(PROMPTS)
    for _ in range(steps):
        sum(adapter.diffusion_loss(adapter.transformer, latents, conditioning).values()).backward()
        optimizer.step()
        optimizer.zero_grad()


def generate(pipe):
    pipe.transformer.eval()
    kwargs = {"num_inference_steps": 2, "num_diffusion_steps": 2, "output_type": "np"}
    return pipe("a red ball", generator=torch.Generator().manual_seed(0), max_latent_length=1, **kwargs).frames


def test_lora_trains_saves_and_loads_into_a_stock_pipeline(adapter, nova, tmp_path):
    adapter.add_lora(4, 8)
    assert {n.rsplit(".", 1)[-1] for n, m in adapter.transformer.named_modules() if hasattr(m, "lora_A")} == {
        "qkv",
        "proj",
    }
    train_steps(adapter)
    adapter.save_lora_weights(tmp_path, adapter.transformer)
    trained = {k: v.detach().clone() for k, v in adapter.transformer.state_dict().items() if "lora" in k}

    pipe = adapter.spec.pipeline_class.from_pretrained(nova["path"])
    base_frames = generate(pipe)
    load_nova_lora(pipe.transformer, tmp_path)
    config = pipe.transformer.peft_config["default"]
    assert (config.r, config.lora_alpha) == (4, 8)
    loaded = {k: v for k, v in pipe.transformer.state_dict().items() if "lora" in k}
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert not np.array_equal(generate(pipe), base_frames)  # the LoRA changes the output

    resumed = NOVAAdapter.from_pretrained(load_spec(nova["path"]))
    resumed.add_lora(4, 8)
    resumed.load_lora_weights(tmp_path, resumed.transformer)
    assert all(torch.equal(resumed.transformer.state_dict()[k], trained[k]) for k in trained)


def test_full_training_keeps_novas_frozen_modules_and_saves_in_novas_format(adapter, nova, tmp_path):
    adapter.enable_full_training()
    frozen = {n for n, p in adapter.transformer.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("text_embed.norm", "motion_embed")) for n in frozen)
    adapter.enable_gradient_checkpointing()
    before = {k: v.clone() for k, v in adapter.transformer.state_dict().items()}
    train_steps(adapter)
    adapter.save_transformer(tmp_path, adapter.transformer)

    transformer = type(adapter.transformer).from_pretrained(tmp_path, subfolder="transformer")
    saved = transformer.state_dict()
    assert any(not torch.equal(saved[k], before[k]) for k in before)
    assert all(torch.equal(saved[k], v) for k, v in adapter.transformer.state_dict().items())
    pipe = adapter.spec.pipeline_class.from_pretrained(nova["path"], transformer=transformer)
    assert generate(pipe).shape == (1, 1, HEIGHT, WIDTH, 3)


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
    spec = load_spec(nova["path"])
    with diffnext_modules(), pytest.raises(ImportError, match=r"pip install \./NOVA"):
        sys.modules["diffnext"] = None  # as if it were not installed
        NOVAAdapter.from_pretrained(spec)


@pytest.mark.parametrize("training_mode", ["lora", "full"])
def test_model_card_code_loads_the_run_on_the_output_folder_and_on_the_hub_repo(
    adapter, nova, tmp_path, training_mode
):
    """The card's code, as written: `diffnext`'s pipeline, `load_nova_lora` for a LoRA, NOVA's transformer class for a
    full fine-tune; from the run's folder and from its Hub repository."""
    settings = GenerationSettings(num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=2)
    check_card_code(
        adapter, training_mode, settings, tmp_path, python=(sys.executable, *launcher(nova)), env=launched_env(nova)
    )


@pytest.mark.slow
def test_training_script_runs_end_to_end_on_nova(nova, tmp_path):
    data = tmp_path / "data"
    write_test_dataset(data, num_clips=2)
    tiny_videomae(image_size=(HEIGHT // 2, WIDTH // 2)).save_pretrained(tmp_path / "teacher")
    output_dir = tmp_path / "lora"  # full fine-tuning trains and saves in the tests above
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        *launcher(nova),
        str(SCRIPT),
        "--model_family",
        "nova",
        "--pretrained_model_name_or_path",
        str(nova["path"]),
        "--instance_data_root",
        str(data),
        "--caption_column",
        "prompts.txt",
        "--video_column",
        "videos.txt",
        "--teacher_model_name_or_path",
        str(tmp_path / "teacher"),
        "--teacher_height",
        str(HEIGHT // 2),
        "--teacher_width",
        str(WIDTH // 2),
        "--height",
        str(HEIGHT),
        "--width",
        str(WIDTH),
        "--max_num_frames",
        str(FRAMES),
        "--alignment_loss",
        "m-tsa",
        "--alignment_depth",
        "3",
        "--alignment_weight",
        "0.5",
        "--tsa_temperature",
        "0.1",
        "--tsa_mask_ratio",
        "0.2",
        "--training_mode",
        "lora",
        "--train_batch_size",
        "2",
        "--rank",
        "4",
        "--lora_alpha",
        "4",
        "--projector_hidden_dim",
        "16",
        "--seed",
        "0",
        "--report_to",
        "none",
        "--lr_warmup_steps",
        "0",
        "--max_train_steps",
        "2",
        "--checkpointing_steps",
        "100",
        "--validation_prompt",
        "a ball",
        "--num_validation_videos",
        "1",
        "--output_dir",
        str(output_dir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=launched_env(nova), timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (output_dir / "pytorch_lora_weights.safetensors").is_file()
    assert (output_dir / "alignment_projector" / "diffusion_pytorch_model.safetensors").is_file()
    assert (output_dir / "validation" / "final-0-0.mp4").is_file()
    # The card the script wrote: its code loads the output folder as written.
    run_card_code(
        output_dir / "README.md", tmp_path / "use_it", python=(sys.executable, *launcher(nova)), env=launched_env(nova)
    )


def test_eval_generate_runs_a_nova_lora(adapter, nova, tmp_path):
    """`eval/generate.py` loads base + LoRA through the adapter (`load_nova_lora`) and the LoRA changes the videos."""
    import imageio.v3 as iio

    from eval import generate as eval_generate

    adapter.add_lora(4, 4)
    train_steps(adapter)
    adapter.save_lora_weights(tmp_path / "lora", adapter.transformer)
    (tmp_path / "prompts.csv").write_text("caption,upsampled_caption\nA red ball falls.,a red ball falls\n")
    common = [
        "--benchmark",
        "videophy2",
        "--pretrained_model_name_or_path",
        str(nova["path"]),
        "--prompts",
        str(tmp_path / "prompts.csv"),
        "--labels",
        "none",
        "--num_frames",
        str(FRAMES),
        "--height",
        str(HEIGHT),
        "--width",
        str(WIDTH),
        "--num_inference_steps",
        "2",
        "--dtype",
        "fp32",
        "--device",
        "cpu",
    ]
    eval_generate.main([*common, "--output_dir", str(tmp_path / "base")])
    eval_generate.main([*common, "--lora", str(tmp_path / "lora"), "--output_dir", str(tmp_path / "tuned")])
    base, tuned = (iio.imread(tmp_path / run / "videos" / "A_red_ball_falls.mp4") for run in ("base", "tuned"))
    assert base.shape == tuned.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert not np.array_equal(base, tuned)
    with pytest.raises(SystemExit, match="error: --use_dynamic_cfg=True: not supported by NOVA"):
        from eval.common import exit_on_user_error

        exit_on_user_error(lambda: eval_generate.main([*common, "--use_dynamic_cfg", "--output_dir", str(tmp_path)]))
