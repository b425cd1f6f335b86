"""One precompute pass for every frozen model: `ModelInputs` (the VAE posterior and the prompt embeddings) beside
`TeacherFeatures`, training on them without the VAE encoder or the text encoder, and the settings that travel with
them."""

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from diffusers import (
    CogVideoXPipeline,
    HunyuanVideo15Pipeline,
    Kandinsky5T2VPipeline,
    LTX2Pipeline,
    LTXPipeline,
    SanaVideoPipeline,
    WanPipeline,
)
from test_train_script import (
    SCRIPT,
    accelerate_launch,
    common_flags,
    launch_command,
    logged_scalars,
    offline_env,
    parse_script_args,
    precomputed_flags,
)

from diffusers_tsa.adapters import ADAPTERS, TrainingOptions, load_spec
from diffusers_tsa.cli import FlagError, flag_errors
from diffusers_tsa.data import ClipSpec, load_video_dataset
from diffusers_tsa.errors import UsageError
from diffusers_tsa.features import ModelInputs, Precompute, TeacherFeatures
from diffusers_tsa.features.precomputed import check_inputs_settings
from diffusers_tsa.teachers import TeacherInput, load_teacher
from diffusers_tsa.testing import tiny_cogvideox_components, tiny_videomae, write_test_dataset
from diffusers_tsa.testing.hunyuan_video15 import tiny_hunyuan_video15_components
from diffusers_tsa.testing.kandinsky5 import (
    TINY_KANDINSKY5_HEIGHT,
    TINY_KANDINSKY5_NUM_FRAMES,
    TINY_KANDINSKY5_WIDTH,
    tiny_kandinsky5_components,
)
from diffusers_tsa.testing.ltx2 import (
    TINY_LTX2_HEIGHT,
    TINY_LTX2_NUM_FRAMES,
    TINY_LTX2_WIDTH,
    tiny_ltx2_components,
)
from diffusers_tsa.testing.ltx_video import (
    TINY_LTX_HEIGHT,
    TINY_LTX_NUM_FRAMES,
    TINY_LTX_WIDTH,
    tiny_ltx_video_components,
)
from diffusers_tsa.testing.nova import install_diffnext_double, save_tiny_nova_pipeline
from diffusers_tsa.testing.sana_video import (
    TINY_SANA_VIDEO_HEIGHT,
    TINY_SANA_VIDEO_NUM_FRAMES,
    TINY_SANA_VIDEO_WIDTH,
    tiny_sana_video_components,
)
from diffusers_tsa.testing.wan import tiny_wan_components
from diffusers_tsa.training import TrainingClips, collate_examples, model_inputs, plan_training


PROMPT = "a white square moves right"
DATA = {"instance_data_root": None, "caption_column": "prompts.txt", "video_column": "videos.txt"}
#: family -> (pipeline, its tiny components, clip, text length)
FAMILIES = {
    "cogvideox": (
        CogVideoXPipeline,
        tiny_cogvideox_components,
        ClipSpec(height=96, width=144, max_num_frames=9),
        None,
    ),
    "wan": (WanPipeline, tiny_wan_components, ClipSpec(height=64, width=96, max_num_frames=9), 16),
    "ltx_video": (
        LTXPipeline,
        tiny_ltx_video_components,
        ClipSpec(height=TINY_LTX_HEIGHT, width=TINY_LTX_WIDTH, max_num_frames=TINY_LTX_NUM_FRAMES),
        16,
    ),
    "kandinsky5": (
        Kandinsky5T2VPipeline,
        tiny_kandinsky5_components,
        ClipSpec(
            height=TINY_KANDINSKY5_HEIGHT, width=TINY_KANDINSKY5_WIDTH, max_num_frames=TINY_KANDINSKY5_NUM_FRAMES
        ),
        16,
    ),
    "ltx2": (
        LTX2Pipeline,
        tiny_ltx2_components,
        ClipSpec(height=TINY_LTX2_HEIGHT, width=TINY_LTX2_WIDTH, max_num_frames=TINY_LTX2_NUM_FRAMES),
        16,
    ),
    "hunyuan_video15": (
        HunyuanVideo15Pipeline,
        tiny_hunyuan_video15_components,
        ClipSpec(height=32, width=48, max_num_frames=9),
        16,
    ),
    "sana_video": (
        SanaVideoPipeline,
        tiny_sana_video_components,
        ClipSpec(
            height=TINY_SANA_VIDEO_HEIGHT, width=TINY_SANA_VIDEO_WIDTH, max_num_frames=TINY_SANA_VIDEO_NUM_FRAMES
        ),
        16,
    ),
    # NOVA's test double (`diffusers_tsa.testing.nova`, loaded through its stand-in `diffnext` package, installed by `tiny`).
    "nova": (None, None, ClipSpec(height=64, width=96, max_num_frames=9), None),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny CogVideoX, Wan 2.1, LTX-Video and Kandinsky 5 pipelines, a tiny VideoMAE teacher and four clips, saved to disk (the
    layout of `test_train_script`'s fixture, whose helpers these tests reuse)."""
    root = tmp_path_factory.mktemp("tiny")
    for family, (pipeline, components, _, _) in FAMILIES.items():
        if pipeline is not None:
            pipeline(**components()).save_pretrained(root / ("base" if family == "cogvideox" else family))
    site = str(install_diffnext_double(root / "site"))
    save_tiny_nova_pipeline(root / "nova")
    tiny_videomae().save_pretrained(root / "teacher")
    write_test_dataset(root / "data", num_clips=4, caption=PROMPT)
    sys.path.insert(0, site)
    try:
        yield root
    finally:
        sys.path.remove(site)
        for name in [name for name in sys.modules if name.split(".")[0] == "diffnext"]:
            del sys.modules[name]


def table(tiny):
    return load_video_dataset(**{**DATA, "instance_data_root": tiny / "data"})


def adapter(tiny, family, **kwargs):
    spec = load_spec(tiny / ("base" if family == "cogvideox" else family))
    options = TrainingOptions(max_sequence_length=FAMILIES[family][3])
    return ADAPTERS[spec.family].from_pretrained(spec, options=options, **kwargs)


def cache(tiny, family, folder, *, storage_dtype="float32", **kwargs):
    """`ModelInputs` of the tiny `family` mapped over the four clips and saved to `folder`."""
    transform = ModelInputs(
        adapter(tiny, family, transformer=False), FAMILIES[family][2], storage_dtype=storage_dtype, **kwargs
    )
    mapped = transform.map(table(tiny), batch_size=2)
    mapped.save_to_disk(folder)
    return mapped, transform


# --- The objective on the cache is the objective on the videos -----------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_the_posterior_noise_does_not_depend_on_the_moments_layout(tiny, family):
    """The noise of a latent sample is drawn contiguously: channels-last moments (what NOVA's real VAE returns) give
    the sample that contiguous ones give, for the same seed."""
    model = adapter(tiny, family, transformer=False)
    moments = torch.randn(1, 8, 3, 4, 6)
    samples = []
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        torch.manual_seed(0)
        samples.append(model.sample_latents(moments.to(memory_format=layout)))
    torch.testing.assert_close(samples[1], samples[0], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("storage_dtype, tolerance", [("float32", 1e-4), ("bfloat16", 2e-2)])
def test_the_loss_on_the_cache_is_the_loss_on_the_videos(tiny, tmp_path, family, storage_dtype, tolerance):
    """The same clips, seed and noise: a latent sampled from the stored posterior and the stored prompt embeddings
    give the diffusion loss that encoding the videos and captions gives (exactly up to float32 rounding when stored
    in float32; within bfloat16's rounding otherwise)."""
    # The VAE encodes the clips two at a time, as the videos' batch: its outputs vary with the batch size (~1e-4).
    mapped, transform = cache(tiny, family, tmp_path / "cache", storage_dtype=storage_dtype, vae_batch_size=2)
    full, bare = adapter(tiny, family), adapter(tiny, family, encoders=False)
    for model in (full, bare):
        model.transformer.train()  # as the training loop does (NOVA's forward is its training step in train mode)
    assert bare.vae is None and bare.text_encoder is None and bare.tokenizer is None
    clip, columns = FAMILIES[family][2], list(transform.shapes)
    from_videos = collate_examples([TrainingClips(mapped, clip)[i] for i in (0, 1)])
    from_cache = collate_examples(
        [TrainingClips(mapped, clip, inputs_columns=columns, decode_videos=False)[i] for i in (0, 1)]
    )
    assert "videos" not in from_cache and from_cache["latent_moments"].dtype == getattr(torch, storage_dtype)
    losses = []
    for model, batch in ((full, from_videos), (bare, from_cache)):
        torch.manual_seed(0)
        np.random.seed(0)  # NOVA's caption dropout draws from numpy's RNG
        latents, conditioning = model_inputs(model, batch, dtype=torch.float32)
        losses.append(sum(model.diffusion_loss(model.transformer, latents, conditioning).values()))
    assert losses[0].item() > 0
    torch.testing.assert_close(losses[1], losses[0], rtol=tolerance, atol=0)


#: The family's latents from a VAE sample `z` `(B, C, F, H, W)`, as each diffusers pipeline normalises them.
NORMALISED = {
    "cogvideox": lambda vae, z: (z * vae.config.scaling_factor).permute(0, 2, 1, 3, 4),
    "wan": lambda vae, z: (
        (z - torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1))
        / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    ),
    "ltx_video": lambda vae, z: (
        (z - vae.latents_mean.view(1, -1, 1, 1, 1)) * vae.config.scaling_factor / vae.latents_std.view(1, -1, 1, 1, 1)
    ),
    "kandinsky5": lambda vae, z: z * vae.config.scaling_factor,  # Kandinsky5T2VPipeline decodes latents / it
    "ltx2": lambda vae, z: LTX2Pipeline._normalize_latents(
        z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
    ),
}


# NOVA's double: the loss-equality test above; HunyuanVideo 1.5 (whose VAE encodes one clip at a time):
# tests/adapters/test_hunyuan_video15_adapter.py.
@pytest.mark.parametrize("family", NORMALISED)
def test_the_latents_of_the_cache_and_of_the_videos_are_the_vae_sample(tiny, tmp_path, family):
    """Independent of the adapter's sampler: with the same seed, both give diffusers' own `latent_dist.sample()`,
    normalised as the family's pipeline does (the cache's posterior encoded clip by clip, as the precompute does:
    CogVideoX's VAE encodes a batch of two clips about 1e-3 away from each clip alone)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    mapped, transform = cache(tiny, family, tmp_path / "cache")
    full, bare = adapter(tiny, family), adapter(tiny, family, encoders=False)
    clip = FAMILIES[family][2]
    from_videos = collate_examples([TrainingClips(mapped, clip)[i] for i in (0, 1)])
    from_cache = collate_examples(
        [TrainingClips(mapped, clip, inputs_columns=list(transform.shapes), decode_videos=False)[i] for i in (0, 1)]
    )
    pixels = from_videos["videos"].permute(0, 2, 1, 3, 4)
    with torch.no_grad():
        batched = full.vae.encode(pixels).latent_dist
        one_by_one = torch.cat([full.vae.encode(pixels[i : i + 1]).latent_dist.parameters for i in (0, 1)])
    for model, batch, posterior in (
        (full, from_videos, batched),
        (bare, from_cache, DiagonalGaussianDistribution(one_by_one)),
    ):
        torch.manual_seed(0)
        expected = NORMALISED[family](full.vae, posterior.sample())
        torch.manual_seed(0)
        latents, _ = model_inputs(model, batch, dtype=torch.float32)
        torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-5)


def test_the_stored_posterior_is_the_vae_posterior_in_the_latent_space(tiny, tmp_path):
    """By hand: the CogVideoX latents are z * scaling_factor, so the stored mean is the VAE mean times it and the
    log-variance the VAE's plus 2 log(scaling_factor); the prompt embeddings are the T5 output of the caption."""
    mapped, _ = cache(tiny, "cogvideox", tmp_path / "cache")
    model = adapter(tiny, "cogvideox")
    video = TrainingClips(mapped, FAMILIES["cogvideox"][2])[0]["video"][None]
    with torch.no_grad():
        posterior = model.vae.encode(video.permute(0, 2, 1, 3, 4)).latent_dist
    scale = model.vae.config.scaling_factor
    stored = torch.tensor(mapped[0]["latent_moments"])
    torch.testing.assert_close(
        stored, torch.cat([posterior.mean * scale, posterior.logvar + 2 * torch.log(torch.tensor(scale))], dim=1)[0]
    )
    expected = model.text_encoder(
        model.tokenizer(
            [mapped[0]["caption"]], padding="max_length", max_length=16, truncation=True, return_tensors="pt"
        ).input_ids
    )[0]
    torch.testing.assert_close(torch.tensor(mapped[0]["prompt_embeds"]), expected[0])


def test_unreadable_clips_are_marked_and_the_id_token_is_recorded(tiny, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1024)
    rows = table(tiny).select([0, 1])
    rows = datasets.concatenate_datasets(
        [rows, datasets.Dataset.from_dict({"caption": ["bad"], "video": [str(bad)]}, features=rows.features)]
    )
    transform = ModelInputs(adapter(tiny, "cogvideox", transformer=False), FAMILIES["cogvideox"][2], id_token="TOK")
    mapped = transform.map(rows)
    assert mapped["inputs_valid"] == [True, True, False] and transform.num_invalid == 1
    assert mapped[2]["latent_moments"] is None
    settings = json.loads(mapped[0]["inputs_settings"])
    assert settings["id_token"] == "TOK" and settings["model"]["family"] == "cogvideox"
    assert settings["columns"] == {"latent_moments": [8, 3, 12, 18], "prompt_embeds": [16, 32]}
    assert transform.bytes_per_clip == 2 * (8 * 3 * 12 * 18 + 16 * 32)
    # The bound the free-space check uses before the encoders load: 2 moments of the 3 x 6 x 9 video tokens.
    assert ModelInputs.min_bytes_per_clip(transform.adapter.spec, FAMILIES["cogvideox"][2], "float16") == 2 * 2 * 162


def test_one_decode_adds_every_column(tiny, tmp_path, monkeypatch):
    """`Precompute([ModelInputs, TeacherFeatures])` reads each clip once and gives both transforms' columns, equal to
    what each gives alone."""
    import diffusers_tsa.features.transform as transform_module

    clip = FAMILIES["cogvideox"][2]
    teacher = load_teacher(tiny / "teacher", TeacherInput.for_clip(clip.num_frames, clip.height, clip.width))
    inputs = ModelInputs(adapter(tiny, "cogvideox", transformer=False), clip, storage_dtype="float32")
    features = TeacherFeatures(teacher, clip, storage_dtype="float32")
    decoded = []
    real = transform_module.read_video
    monkeypatch.setattr(transform_module, "read_video", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    both = Precompute([inputs, features]).map(table(tiny), batch_size=4)
    assert len(decoded) == 4
    alone = features.map(table(tiny), batch_size=4)
    assert both["teacher_features"] == alone["teacher_features"] and both["inputs_valid"] == [True] * 4
    with pytest.raises(ValueError, match="must read clips the same way"):
        Precompute([inputs, TeacherFeatures(teacher, ClipSpec(height=96, width=144, max_num_frames=5))])


# --- Training on the cache -----------------------------------------------------------------------------------------


def cli_cache(tiny, folder, *flags, processes=1):
    """The features CLI (latents, prompt embeddings and teacher features of the four clips), through
    `accelerate launch` with `processes` processes."""
    command = [
        *accelerate_launch(processes, threads=1),
        "-m",
        "diffusers_tsa.features",
        "--instance_data_root",
        str(tiny / "data"),
        "--caption_column",
        "prompts.txt",
        "--video_column",
        "videos.txt",
        "--pretrained_model_name_or_path",
        str(tiny / "base"),
        "--teacher_model_name_or_path",
        str(tiny / "teacher"),
        "--height",
        "96",
        "--width",
        "144",
        "--max_num_frames",
        "9",
        "--output_dir",
        str(folder),
        *flags,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_training_on_the_cache_logs_the_losses_of_training_on_the_videos_without_the_encoders(tiny, tmp_path):
    """The script, 2 steps, the same seed: from the videos (VAE, T5 and the teacher run at each step) and from the
    features CLI's float32 cache of all three. The logged losses agree, and the cached run never had the VAE or the
    text encoder in its process (the modules alive when training ends)."""
    pytest.importorskip("tensorboard", reason="the logged scalars are read from tensorboard's event files")
    cli_cache(tiny, tmp_path / "cache", "--storage_dtype", "float32")
    modules, logs = {}, {}
    for name, run_flags in (
        ("videos", common_flags(tiny, tmp_path / "videos")),
        ("cache", precomputed_flags(tiny, tmp_path / "cache", tmp_path / "cached")),
    ):
        modules[name] = tmp_path / f"{name}.txt"
        command = launch_command(
            tiny,
            None,
            *run_flags,
            "--max_train_steps",
            "2",
            "--report_to",
            "tensorboard",
            common=False,
            script=(SCRIPT.parent / "tests" / "commands" / "launch_listing_modules.py", SCRIPT),
        )
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=600,
            env={**offline_env(), "MODULES_FILE": str(modules[name])},
        )
        logs[name] = done.stdout + done.stderr
        assert done.returncode == 0, logs[name][-4000:]
    assert "Inputs = precomputed latents and prompt embeddings" in logs["cache"]
    assert "Inputs = encoded by the VAE and the text encoder" in logs["videos"]
    videos, cached = logged_scalars(tmp_path / "videos"), logged_scalars(tmp_path / "cached")
    for tag in ("loss/diffusion", "loss/alignment", "loss/total"):
        assert [step for step, _ in cached[tag]] == [1, 2]
        assert [v for _, v in cached[tag]] == pytest.approx([v for _, v in videos[tag]], rel=1e-5), tag
    alive = {name: set(path.read_text().split()) for name, path in modules.items()}
    encoders = {"AutoencoderKLCogVideoX", "T5EncoderModel"}
    assert encoders <= alive["videos"] and "CogVideoXTransformer3DModel" in alive["cache"]
    assert not encoders & alive["cache"]


@pytest.mark.slow
def test_shards_from_two_processes_merge_into_one_cache(tiny, tmp_path):
    log = cli_cache(tiny, tmp_path / "two", processes=2)
    merged = datasets.load_from_disk(tmp_path / "two")["train"]
    assert "Wrote 4 clips (0 unusable)" in log and not (tmp_path / "two.shards").exists()
    assert merged["inputs_valid"] == [True] * 4 and merged["teacher_valid"] == [True] * 4
    assert merged["video"] == table(tiny)["video"]  # in the table's order: shard 0, then shard 1
    one, _ = cache(tiny, "cogvideox", tmp_path / "one", storage_dtype="float16")
    for column in ("latent_moments", "prompt_embeds"):  # the same values, whichever process made them
        torch.testing.assert_close(torch.tensor(merged[column]), torch.tensor(one[column]), rtol=1e-3, atol=1e-3)


# --- A cache made otherwise is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--height", "112"], r"made with --height=96, but training is given --height=112"),
        (["--max_num_frames", "5"], r"made with --max_num_frames=9, but training is given --max_num_frames=5"),
        (["--id_token", "TOK"], r"made with --id_token=None, but training is given --id_token='TOK'"),
        (["--pretrained_model_name_or_path", "tiny:other"], r"made with --pretrained_model_name_or_path='.*base'"),
        (["--random_flip"], r"--random_flip and --video_reshape_mode random change the clip after its latents"),
    ],
)
def test_a_cache_made_with_other_settings_is_refused_naming_the_flag(tiny, tmp_path, flags, message):
    cache(tiny, "cogvideox", tmp_path / "cache", storage_dtype="float16")
    if "tiny:other" in flags:
        CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(tmp_path / "other")
        flags = [str(tmp_path / "other") if flag == "tiny:other" else flag for flag in flags]
    args = parse_script_args(
        [
            *precomputed_flags(tiny, tmp_path / "cache", tmp_path / "out"),
            "--teacher_model_name_or_path",
            str(tiny / "teacher"),
            *flags,
        ]
    )
    with pytest.raises(FlagError, match=message), flag_errors():
        plan_training(args)


def test_the_recorded_text_length_is_the_resolved_one_and_an_older_none_is_the_default(tiny):
    """A cache records the length its prompts were padded to, never `None`; a cache precomputed before that, whose
    `None` meant the family's default, matches a run at the default and is refused for another length."""
    clip = FAMILIES["wan"][2]
    settings = ModelInputs(adapter(tiny, "wan", transformer=False), clip).settings()
    assert settings["max_sequence_length"] == 16
    spec, older = load_spec(tiny / "wan"), {**settings, "max_sequence_length": None}
    given = {"id_token": None, **{f"ClipSpec.{key}": value for key, value in settings["clip"].items()}}
    check_inputs_settings(settings, spec.for_training(TrainingOptions(max_sequence_length=16)), given)
    check_inputs_settings(older, spec.for_training(TrainingOptions()), given)
    with pytest.raises(UsageError, match=r"made with `max_sequence_length=16`, but training is given `max_seq.*=512`"):
        check_inputs_settings(settings, spec.for_training(TrainingOptions()), given)
    with pytest.raises(UsageError, match=r"made with `max_sequence_length=512`, but training is given `max_seq.*=16`"):
        check_inputs_settings(older, spec.for_training(TrainingOptions(max_sequence_length=16)), given)


def test_a_matching_cache_plans_a_run_without_the_encoders(tiny, tmp_path):
    cache(tiny, "cogvideox", tmp_path / "cache", storage_dtype="bfloat16")
    plan = plan_training(
        parse_script_args(
            [
                *precomputed_flags(tiny, tmp_path / "cache", tmp_path / "out"),
                "--teacher_model_name_or_path",
                str(tiny / "teacher"),
            ]
        )
    )
    assert plan.inputs_columns == ["latent_moments", "prompt_embeds"] and plan.needs_videos  # the teacher is online
    example = TrainingClips(plan.table, plan.clip, inputs_columns=plan.inputs_columns, decode_videos=False)[0]
    assert example["latent_moments"].dtype == torch.bfloat16 and example["latent_moments"].shape == (8, 3, 12, 18)
    assert example["text"]["prompt_embeds"].dtype == torch.bfloat16 and "video" not in example


@pytest.mark.parametrize("family", FAMILIES)
def test_captions_longer_than_the_text_length_are_counted_with_an_example(tiny, family):
    """What the precompute and training log once at their end (`ModelAdapter.truncated_captions`)."""
    model = adapter(tiny, family, transformer=False)
    long = " ".join(["a white square moves right"] * 60)  # 300 words
    model.text_encoder_outputs([long, PROMPT])
    model.text_encoder_outputs([long])
    truncated = model.truncated_captions
    assert len(truncated) == 2 and truncated.example[0] == long and truncated.example[1] >= 300
    summary = truncated.summary()
    assert summary.startswith(f"2 caption(s) were longer than `max_sequence_length={truncated.max_length}` tokens")
    assert "'a white square moves right a white" in summary and "..." in summary and "\n" not in summary
