"""eval.generate end to end on a tiny offline CogVideoX pipeline with a LoRA: two prompts, then a resumed run."""

import csv
import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from diffusers_tsa.eval import generate
from diffusers_tsa.eval.common import EvalInputError, exit_on_user_error


TINY = [
    "--num_inference_steps",
    "2",
    "--num_frames",
    "9",
    "--height",
    "96",
    "--width",
    "144",
    "--max_sequence_length",
    "16",
    "--dtype",
    "fp32",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from diffusers import CogVideoXPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    from diffusers_tsa.testing import tiny_cogvideox_components

    root = tmp_path_factory.mktemp("tiny")
    pipe = CogVideoXPipeline(**tiny_cogvideox_components())
    pipe.save_pretrained(root / "base")
    transformer = pipe.transformer
    transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"], init_lora_weights=False)
    )
    CogVideoXPipeline.save_lora_weights(root / "lora", transformer_lora_layers=get_peft_model_state_dict(transformer))
    (root / "prompts.csv").write_text(
        "caption,upsampled_caption\nA cat jumps.,a cat jumps high\nWater pours into a glass.,water pours\n"
    )
    return root


def test_generate_with_lora_then_resume(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = [
        "--benchmark",
        "videophy2",
        "--pretrained_model_name_or_path",
        str(tiny_model / "base"),
        "--lora",
        str(tiny_model / "lora"),
        "--prompts",
        str(tiny_model / "prompts.csv"),
        "--labels",
        "none",
        "--output_dir",
        str(out),
        *TINY,
    ]
    loaded = []
    real_load = generate.load_pipeline

    def spy(spec, args, scheduler):
        pipe = real_load(spec, args, scheduler)
        loaded.append(pipe)
        return pipe

    monkeypatch.setattr(generate, "load_pipeline", spy)
    generate.main(argv)
    assert len(loaded) == 1 and len(loaded[0].get_active_adapters()) == 1  # the LoRA is loaded and active
    # The paper's sampler (VideoREPA's): DPM-Solver with trailing timesteps, whatever the checkpoint's scheduler.
    scheduler = loaded[0].scheduler
    assert type(scheduler).__name__ == "CogVideoXDPMScheduler" and scheduler.config.timestep_spacing == "trailing"
    files = sorted(p.name for p in (out / "videos").iterdir())
    assert files == ["A_cat_jumps.mp4", "Water_pours_into_a_glass.mp4"]
    import imageio.v3 as iio

    frames = iio.imread(out / "videos" / "A_cat_jumps.mp4")
    assert frames.shape == (9, 96, 144, 3)
    with (out / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {
        "prompt": "A cat jumps.",
        "generation_prompt": "a cat jumps high",
        "file": "videos/A_cat_jumps.mp4",
        "seed": "42",
        "category": "",
        "is_hard": "",
        "scheduler": "dpm",
        "vae_tiling": "true",
    }
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "videos").iterdir()}
    generate.main(argv)  # resumed: nothing left to do, so the model is not even loaded
    assert len(loaded) == 1
    assert {p: p.stat().st_mtime_ns for p in (out / "videos").iterdir()} == mtimes


def test_shards_split_the_plan(tiny_model, tmp_path):
    argv = [
        "--benchmark",
        "vbench",
        "--pretrained_model_name_or_path",
        "unused",
        "--prompts",
        str(tiny_model / "prompts.csv"),
        "--output_dir",
        str(tmp_path),
        "--manifest_only",
    ]
    plan = generate.generate(generate.parse_args(argv))
    assert len(plan) == 10 and plan[1].file == "videos/A cat jumps.-1.mp4"
    assert generate.parse_shard("1/4") == (1, 4)
    with pytest.raises(EvalInputError, match="--shard '4/4'"):
        generate.parse_shard("4/4")
    with pytest.raises(EvalInputError, match="expected `i/n`"):
        generate.parse_shard("first")


def test_shards_partition_the_videos_and_the_lora_changes_them(tiny_model, tmp_path):
    import imageio.v3 as iio

    prompts = tmp_path / "prompts.csv"
    prompts.write_text(
        "caption,upsampled_caption\nA cat jumps.,a cat jumps\nA ball falls.,a ball falls\nWater pours.,water pours\n"
    )
    common = [
        "--benchmark",
        "videophy2",
        "--pretrained_model_name_or_path",
        str(tiny_model / "base"),
        "--prompts",
        str(prompts),
        "--labels",
        "none",
        *TINY,
    ]
    out = tmp_path / "lora"
    written = []
    for shard in ("1/2", "0/2"):
        before = set((out / "videos").glob("*.mp4")) if (out / "videos").is_dir() else set()
        generate.main([*common, "--lora", str(tiny_model / "lora"), "--shard", shard, "--output_dir", str(out)])
        written.append({p.name for p in (out / "videos").glob("*.mp4")} - {p.name for p in before})
    plan = {"A_cat_jumps.mp4", "A_ball_falls.mp4", "Water_pours.mp4"}
    assert written == [{"A_ball_falls.mp4"}, {"A_cat_jumps.mp4", "Water_pours.mp4"}]  # every 2nd from i, disjoint
    assert set.union(*written) == plan

    generate.main([*common, "--max_prompts", "1", "--output_dir", str(tmp_path / "base")])
    base = iio.imread(tmp_path / "base" / "videos" / "A_cat_jumps.mp4")
    tuned = iio.imread(out / "videos" / "A_cat_jumps.mp4")
    assert base.shape == tuned.shape and np.abs(base.astype(int) - tuned.astype(int)).mean() > 1  # the LoRA acts


class Loaded(Exception):
    """Raised by a stand-in for `generate.load_pipeline`: the run got as far as loading the model."""


@pytest.fixture
def no_loading(monkeypatch):
    def load_pipeline(spec, args, scheduler):
        raise Loaded

    monkeypatch.setattr(generate, "load_pipeline", load_pipeline)


def test_rerun_with_other_settings_is_refused_before_loading(tiny_model, tmp_path, no_loading):
    out = tmp_path / "run"
    base = [
        "--benchmark",
        "videophy2",
        "--pretrained_model_name_or_path",
        str(tiny_model / "base"),
        "--prompts",
        str(tiny_model / "prompts.csv"),
        "--labels",
        "none",
        "--output_dir",
        str(out),
        *TINY,
    ]
    lora = ["--lora", str(tiny_model / "lora")]
    with pytest.raises(Loaded):
        generate.main([*base, *lora, "--num_inference_steps", "3"])  # records the settings, then loads the model
    assert json.loads((out / "generation_settings.json").read_text())["num_inference_steps"] == 3
    with pytest.raises(Loaded):  # no video was finished with them: the new settings replace them
        generate.main([*base, *lora])
    recorded = json.loads((out / "generation_settings.json").read_text())
    assert recorded["lora"] == str(tiny_model / "lora") and recorded["scheduler"] == "dpm"
    assert recorded["num_inference_steps"] == 2 and recorded["seed"] == 42 and recorded["enable_tiling"] is True
    (out / "videos").mkdir()
    (out / "videos" / "A_cat_jumps.mp4").write_bytes(b"video")  # a finished video
    # How the work is split, memory savers and how many videos are made leave each video as it is: it resumes.
    with pytest.raises(Loaded):
        generate.main(
            [
                *base,
                *lora,
                "--shard",
                "0/2",
                "--enable_slicing",
                "--max_prompts",
                "1",
                "--num_videos_per_prompt",
                "2",
                "--scheduler",
                "dpm",
            ]
        )
    with pytest.raises(EvalInputError) as refused:
        generate.main([*base, "--num_inference_steps", "3", "--seed", "7"])
    message = str(refused.value)
    assert "--num_inference_steps: recorded 2, given 3" in message and "--seed: recorded 42, given 7" in message
    assert f"--lora: recorded {str(tiny_model / 'lora')!r}, given None" in message
    assert "--guidance_scale" not in message and f"give another --output_dir, or delete {out}" in message
    assert "holds 1 finished video(s)" in message


def test_prompts_sharing_a_protocol_name_get_their_own_videos_or_are_refused(tiny_model, tmp_path, no_loading):
    (tmp_path / "p.txt").write_text("a red ball falls.\na red ball falls\n")
    argv = [
        "--benchmark",
        "videophy",
        "--prompts",
        str(tmp_path / "p.txt"),
        "--labels",
        "none",
        "--no_upsampling",
        "--output_dir",
        str(tmp_path / "out"),
        *TINY,
    ]
    # Videos listed from elsewhere (--manifest_only) carry the protocol's names, which cannot tell these two apart.
    with pytest.raises(EvalInputError, match="'a_red_ball_falls.mp4' from 'a red ball falls.', 'a red ball falls'"):
        generate.main([*argv, "--pretrained_model_name_or_path", "unused", "--manifest_only"])
    assert not (tmp_path / "out").exists()
    with pytest.raises(Loaded):
        generate.main([*argv, "--pretrained_model_name_or_path", str(tiny_model / "base")])
    with (tmp_path / "out" / "manifest.csv").open(newline="") as f:
        files = [row["file"] for row in csv.DictReader(f)]
    assert len(files) == 2 and len(set(files)) == 2


def test_user_mistakes_end_in_one_line_naming_the_flag(tiny_model, tmp_path):
    rest = [
        "--benchmark",
        "videophy2",
        "--prompts",
        str(tiny_model / "prompts.csv"),
        "--labels",
        "none",
        "--output_dir",
        str(tmp_path / "out"),
        *TINY,
    ]
    mistakes = [
        (["--pretrained_model_name_or_path", str(tmp_path / "missing"), "--shard", "2/2"], "--shard '2/2'"),
        (["--pretrained_model_name_or_path", str(tiny_model / "lora")], "--pretrained_model_name_or_path='"),
        (
            ["--pretrained_model_name_or_path", str(tiny_model / "base"), "--lora", str(tmp_path / "no" / "lora")],
            "--lora '",
        ),
    ]
    for argv, flag in mistakes:
        with pytest.raises(SystemExit, match=rf"^error: [^\n]*{re.escape(flag)}[^\n]*$"):
            exit_on_user_error(lambda: generate.main([*argv, *rest]))
    assert not (tmp_path / "out").exists()


def test_counts_must_be_positive(capsys):
    argv = ["--benchmark", "vbench", "--pretrained_model_name_or_path", "x", "--output_dir", "x"]
    for flag in ("--num_videos_per_prompt", "--max_prompts"):
        with pytest.raises(SystemExit):
            generate.parse_args([*argv, flag, "0"])
        assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err


def test_vae_slicing_and_tiling_follow_the_familys_protocol_unless_turned_off(tiny_model, tmp_path, monkeypatch):
    """VideoREPA's CogVideoX generation always enables both; `--no-enable_tiling` turns tiling off, and since tiling
    changes pixels it is recorded (manifest and settings) and a rerun with the other setting is refused."""
    out = tmp_path / "run"
    argv = [
        "--benchmark",
        "videophy2",
        "--pretrained_model_name_or_path",
        str(tiny_model / "base"),
        "--prompts",
        str(tiny_model / "prompts.csv"),
        "--labels",
        "none",
        "--max_prompts",
        "1",
        "--output_dir",
        str(out),
        *TINY,
    ]
    loaded = []
    real_load = generate.load_pipeline

    def spy(spec, args, scheduler):
        pipe = real_load(spec, args, scheduler)
        loaded.append((pipe.vae.use_slicing, pipe.vae.use_tiling))
        return pipe

    monkeypatch.setattr(generate, "load_pipeline", spy)
    generate.main(argv)
    assert loaded == [(True, True)]
    with (out / "manifest.csv").open(newline="") as f:
        assert next(csv.DictReader(f))["vae_tiling"] == "true"
    assert json.loads((out / "generation_settings.json").read_text())["enable_tiling"] is True
    with pytest.raises(EvalInputError, match="--enable_tiling: recorded True, given False"):
        generate.main([*argv, "--no-enable_tiling"])
    off = tmp_path / "off"
    generate.main([*argv, "--no-enable_tiling", "--no-enable_slicing", "--output_dir", str(off)])
    assert loaded[1] == (False, False)
    with (off / "manifest.csv").open(newline="") as f:
        assert next(csv.DictReader(f))["vae_tiling"] == "false"


def test_frames_are_rounded_as_the_pil_path_rounds_them():
    from diffusers.image_processor import VaeImageProcessor

    levels = np.array([0.0, 0.4, 0.6, 127.7, 200.2, 254.6, 255.0]) / 255
    frames = np.broadcast_to(levels[None, None, :, None], (2, 3, 7, 3))
    images = generate.rounded_frames(frames)
    assert len(images) == 2 and images[0].size == (7, 3)
    assert np.asarray(images[1])[0, :, 0].tolist() == [0, 0, 1, 128, 200, 255, 255]  # truncation: 0 0 0 127 200 254
    pil_path = VaeImageProcessor.numpy_to_pil(frames)  # what `output_type="pil"` gives VideoREPA
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, pil_path))


def test_a_rerun_removes_the_temporaries_a_stopped_run_left(tiny_model, tmp_path, no_loading):
    out = tmp_path / "out"
    videos = out / "videos"
    videos.mkdir(parents=True)
    stale = [videos / ".A_cat_jumps.4242.tmp.mp4", videos / ".Water_pours_into_a_glass.7.tmp.mp4"]
    kept = [videos / ".Other_prompt.7.tmp.mp4", videos / "A_cat_jumps.mp4.partial"]
    for path in stale + kept:
        path.write_bytes(b"half a video")
    argv = [
        "--benchmark",
        "videophy2",
        "--pretrained_model_name_or_path",
        str(tiny_model / "base"),
        "--prompts",
        str(tiny_model / "prompts.csv"),
        "--labels",
        "none",
        "--output_dir",
        str(out),
        *TINY,
    ]
    with pytest.raises(Loaded):  # shard 1/2 owns the second prompt only: another shard's temporaries stay
        generate.main([*argv, "--shard", "1/2"])
    assert not stale[1].exists() and stale[0].exists()
    with pytest.raises(Loaded):
        generate.main([*argv, "--shard", "0/2"])
    assert not stale[0].exists() and all(p.exists() for p in kept)  # only this run's videos' temporaries


def test_a_rerun_regenerates_videos_that_do_not_decode_as_expected(tiny_model, tmp_path, caplog):
    """A finished video overwritten with random bytes, or cut short, is not taken as done: the rerun generates it
    again and says how many; the intact one is kept as it is."""
    out = tmp_path / "run"
    argv = [
        "--benchmark",
        "videophy2",
        "--pretrained_model_name_or_path",
        str(tiny_model / "base"),
        "--prompts",
        str(tiny_model / "prompts.csv"),
        "--labels",
        "none",
        "--output_dir",
        str(out),
        *TINY,
    ]
    generate.main(argv)
    videos = out / "videos"
    good = (videos / "A_cat_jumps.mp4").read_bytes()
    kept = (videos / "Water_pours_into_a_glass.mp4").stat().st_mtime_ns
    (videos / "A_cat_jumps.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    with caplog.at_level("WARNING"):
        generate.main(argv)
    assert "1 finished video(s) of this shard do not decode as 9 frames of 96x144" in caplog.text
    assert (videos / "A_cat_jumps.mp4").read_bytes() == good  # the same seed: the same video again
    assert (videos / "Water_pours_into_a_glass.mp4").stat().st_mtime_ns == kept
    from diffusers_tsa.eval.common import decodes_as_expected

    (videos / "cut.mp4").write_bytes(good[: len(good) // 2])
    assert decodes_as_expected(videos / "A_cat_jumps.mp4", 9, 96, 144)
    assert not decodes_as_expected(videos / "A_cat_jumps.mp4", 9, 64, 144)  # made at another size
    assert not decodes_as_expected(videos / "cut.mp4", 9, 96, 144)


def test_a_full_disk_while_writing_a_video_is_one_line(tiny_model, tmp_path, monkeypatch, capsys):
    """A patched writer fails as a full disk does: one `error:` line, no temporary file left."""
    import errno

    import diffusers.utils

    def full(frames, path, fps):
        open(path, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(diffusers.utils, "export_to_video", full)
    out = tmp_path / "run"
    argv = ["--benchmark", "videophy2", "--pretrained_model_name_or_path", str(tiny_model / "base")]
    argv += ["--prompts", str(tiny_model / "prompts.csv"), "--labels", "none", "--output_dir", str(out), *TINY]
    with pytest.raises(SystemExit) as caught:
        exit_on_user_error(lambda: generate.main(argv))
    message = str(caught.value.code)
    assert message.startswith("error: The disk is full: writing videos/A_cat_jumps.mp4 failed") and "\n" not in message
    assert "the finished videos in" in message and list((out / "videos").iterdir()) == []


def test_first_frames_of_a_text_to_video_checkpoint_are_refused_before_loading(tiny_model, tmp_path, no_loading):
    base = ["--benchmark", "videophy2", "--prompts", str(tiny_model / "prompts.csv"), "--labels", "none", *TINY]
    base += ["--pretrained_model_name_or_path", str(tiny_model / "base"), "--output_dir", str(tmp_path / "run")]
    with pytest.raises(EvalInputError, match="--image_dir: the images are first frames of image-to-video runs"):
        generate.main([*base, "--image_dir", str(tmp_path)])
    from diffusers_tsa.cli import FlagError

    with pytest.raises(FlagError, match="is a text-to-video cogvideox checkpoint"):
        generate.main([*base, "--image_to_video", "--image_dir", str(tmp_path)])
    assert not (tmp_path / "run" / "videos").exists()


@pytest.fixture(scope="module")
def tiny_i2v(tmp_path_factory):
    """A tiny CogVideoX image-to-video checkpoint, two first frames and a prompt file whose `image` column names
    them (relative to the file)."""
    from diffusers import CogVideoXImageToVideoPipeline

    from diffusers_tsa.testing import tiny_cogvideox_components

    root = tmp_path_factory.mktemp("tiny_i2v")
    CogVideoXImageToVideoPipeline(**tiny_cogvideox_components(image_to_video=True)).save_pretrained(root / "base")
    (root / "frames").mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (96, 144, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "frames" / f"{i}.png")
    (root / "prompts.csv").write_text(
        "caption,image\nA cat jumps.,frames/0.png\nWater pours into a glass.,frames/1.png\n"
    )
    return root


def test_image_to_video_generates_from_each_prompts_image_column_or_image_dir(tiny_i2v, tmp_path, monkeypatch):
    """Each video is generated from its prompt's first frame: the prompt file's `image` column (paths relative to
    the file), or `--image_dir/<i>.png`; the two give the same videos, and a missing image is one error before any
    video."""
    from diffusers_tsa.adapters.spec import ModelSpec

    given = []
    real = ModelSpec.generate
    monkeypatch.setattr(
        ModelSpec,
        "generate",
        lambda self, pipe, prompt, s, g=None, image=None: (
            given.append((prompt, np.asarray(image))) or real(self, pipe, prompt, s, g, image)
        ),
    )
    base = ["--benchmark", "videophy2", "--prompts", str(tiny_i2v / "prompts.csv"), "--labels", "none", *TINY]
    base += ["--pretrained_model_name_or_path", str(tiny_i2v / "base"), "--image_to_video", "--no_upsampling"]
    generate.main([*base, "--output_dir", str(tmp_path / "column")])
    frames = [np.asarray(Image.open(tiny_i2v / "frames" / f"{i}.png")) for i in range(2)]
    assert [p for p, _ in given] == ["A cat jumps.", "Water pours into a glass."]
    assert all(np.array_equal(image, frame) for (_, image), frame in zip(given, frames))
    generate.main([*base, "--image_dir", str(tiny_i2v / "frames"), "--output_dir", str(tmp_path / "dir")])
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(given[:2], given[2:]))
    for name in ("A_cat_jumps.mp4", "Water_pours_into_a_glass.mp4"):
        column, folder = (iio.imread(tmp_path / run / "videos" / name) for run in ("column", "dir"))
        assert np.array_equal(column, folder)
    (tiny_i2v / "half.csv").write_text("caption,image\nA cat jumps.,frames/0.png\nWater pours into a glass.,\n")
    with pytest.raises(EvalInputError, match="`image` column: 1 prompt.s. have no first frame, e.g. 'Water pours"):
        generate.main([*base[:3], str(tiny_i2v / "half.csv"), *base[4:], "--output_dir", str(tmp_path / "half")])
    assert not (tmp_path / "half" / "videos").exists()
