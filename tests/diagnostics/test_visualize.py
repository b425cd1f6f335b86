"""`python -m diffusers_tsa.visualize` on a synthetic clip with a tiny teacher and a tiny CogVideoX, the rendering
functions a training script calls at validation, and the adapters' fixed-timestep forward the student maps use."""

import inspect
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline, Kandinsky5T2VPipeline, LTXPipeline, WanPipeline
from PIL import Image

from diffusers_tsa.adapters import ADAPTERS, load_spec
from diffusers_tsa.adapters.flow_matching import FlowMatching
from diffusers_tsa.data import ClipSpec, read_video
from diffusers_tsa.diagnostics import (
    alignment_agreement,
    correspondence_maps,
    query_tokens,
    salient_queries,
    teacher_frames,
)
from diffusers_tsa.projector import AlignmentProjector
from diffusers_tsa.teachers import TeacherInput, teacher_config, teacher_geometry
from diffusers_tsa.testing import tiny_cogvideox_components, tiny_videomae, write_test_clip, write_test_dataset
from diffusers_tsa.testing.kandinsky5 import tiny_kandinsky5_components
from diffusers_tsa.testing.ltx_video import tiny_ltx_video_components
from diffusers_tsa.testing.wan import tiny_wan_components
from diffusers_tsa.training import AlignedTransformer, Alignment, AlignmentConfig, TrainingClips, collate_examples
from diffusers_tsa.visualize import (
    VIZ_EXTRA,
    correspondence_video,
    render_correspondence,
    render_motion_masks,
    require_matplotlib,
    save_mp4,
    save_png,
)
from diffusers_tsa.visualize.__main__ import main


# A 9-frame 96x144 clip: CogVideoX tokens 3 x 6 x 9; the teacher sees 8 frames at 32x48, a 4 x 2 x 3 grid (tubelet 2).
CLIP = ["--height", "96", "--width", "144", "--max_num_frames", "9"]
TEACHER_FRAMES, TEACHER_GRID = 8, (4, 2, 3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A clip, a tiny teacher, a tiny CogVideoX pipeline and a full fine-tuning run folder with its projector."""
    root = tmp_path_factory.mktemp("visualize")
    write_test_clip(root / "clip.mp4", height=96, width=144)
    tiny_videomae().save_pretrained(root / "teacher")
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(root / "base")
    tiny_cogvideox_components(seed=1)["transformer"].save_pretrained(root / "run" / "transformer")
    AlignmentProjector(32, 32, student_grid=(3, 6, 9), teacher_grid=TEACHER_GRID, hidden_dim=16).save_pretrained(
        root / "run" / "alignment_projector"
    )
    return root


def common(tiny, out):
    return [
        "--video",
        str(tiny / "clip.mp4"),
        "--teacher_model_name_or_path",
        str(tiny / "teacher"),
        *CLIP,
        "--output_dir",
        str(out),
    ]


def check_png(path):
    assert path.suffix == ".png" and path.stat().st_size > 0
    with Image.open(path) as image:
        image.load()
        assert image.size[0] > 0 and image.size[1] > 0


def check_mp4(path, num_frames):
    assert path.suffix == ".mp4" and path.stat().st_size > 0
    assert imageio_ffmpeg.count_frames_and_secs(str(path))[0] == num_frames
    height, width = imageio_ffmpeg.read_frames(str(path)).__next__()["size"][::-1]
    frames = read_video(path, ClipSpec(height=height, width=width, max_num_frames=num_frames, reshape_mode="stretch"))
    assert frames.shape[1:] == (3, height, width) and frames.isfinite().all()


def test_mask_writes_a_contact_sheet_and_a_video_without_loading_weights(tiny, tmp_path, capsys, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("the mask reads the teacher's config alone")

    monkeypatch.setattr("diffusers_tsa.visualize.command.load_teacher", no_weights)
    monkeypatch.setattr("transformers.VideoMAEModel.from_pretrained", no_weights)
    paths = main(["mask", *common(tiny, tmp_path), "--tsa_mask_ratio", "0.2", "0.5"])
    png, mp4 = paths
    check_png(png)
    check_mp4(mp4, TEACHER_FRAMES)  # every frame the teacher sees
    assert capsys.readouterr().out.splitlines() == [f"wrote {png}", f"wrote {mp4}"]


def test_correspondence_of_pixel_queries_with_the_teacher_alone(tiny, tmp_path):
    paths = main(
        [
            "correspondence",
            *common(tiny, tmp_path),
            "--query",
            "20,48",
            "--query",
            "143,0",
            "--query_frame",
            "1",
            "--temperatures",
            "1.0",
            "0.05",
        ]
    )
    # (x, y) = (20, 48) is token (h, w) = (1, 0) of the 2 x 3 grid over 96x144; (143, 0) is token (0, 2).
    assert [p.name for p in paths] == [
        f"clip_correspondence_f1_{token}.{ext}" for token in ("h1_w0", "h0_w2") for ext in ("png", "mp4")
    ]
    for png, mp4 in zip(paths[::2], paths[1::2]):
        check_png(png)
        check_mp4(mp4, TEACHER_GRID[0] - 1)  # token frames 1, 2, 3


def test_correspondence_of_a_trained_student_reports_its_agreement(tiny, tmp_path, capsys):
    paths = main(
        [
            "correspondence",
            *common(tiny, tmp_path),
            "--pretrained_model_name_or_path",
            str(tiny / "base"),
            "--run_dir",
            str(tiny / "run"),
            "--alignment_depth",
            "1",
            "--timestep",
            "300",
            "--top_k",
            "1",
        ]
    )
    assert len(paths) == 2
    check_png(paths[0])
    check_mp4(paths[1], TEACHER_GRID[0])
    out = capsys.readouterr().out
    assert "student vs teacher, all tokens: top-1 agreement" in out and "M-TSA queries (k = 0.2)" in out


def test_a_base_model_without_a_projector_shows_its_raw_block_tokens(tiny, tmp_path, capsys):
    main(
        [
            "correspondence",
            *common(tiny, tmp_path),
            "--pretrained_model_name_or_path",
            str(tiny / "base"),
            "--alignment_depth",
            "2",
            "--top_k",
            "1",
            "--temperatures",
            "0.1",
            "--num_columns",
            "2",
        ]
    )
    assert "the student maps use the raw tokens of block 2" in capsys.readouterr().out


def test_the_command_line_runs_as_a_module(tiny, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "diffusers_tsa.visualize", "mask", *common(tiny, tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = [Path(line.removeprefix("wrote ")) for line in result.stdout.splitlines()]
    assert [p.suffix for p in written] == [".png", ".mp4"] and all(p.is_file() for p in written)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--query", "144,10"], "--query 144,10 is outside the clip"),
        (["--query", "ten,10"], "--query 'ten,10' must be two integer pixel coordinates"),
        (["--query_frame", "4"], "--query_frame 4 must be a teacher token frame in [0, 3]"),
        (["--top_k", "7"], "--top_k=7 must be in [1, 6]"),
        (["--temperatures", "0"], "every temperature must be positive"),
        (["--run_dir", "somewhere"], "--run_dir needs the base model"),
        (["--tsa_mask_ratio", "1.5"], "--tsa_mask_ratio 1.5 must be in (0, 1]"),
        (["--teacher_height", "40"], "--teacher_height=40 is not a multiple of the patch 16"),
        (["--num_columns", "0"], "--num_columns 0 at least 1"),
    ],
)
def test_a_mistake_ends_with_one_error_line(tiny, tmp_path, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["correspondence", *common(tiny, tmp_path), *flags])
    error = str(exit_info.value.code)
    assert error.startswith("error: ") and "\n" not in error and message in error


def test_a_missing_clip_or_run_folder_ends_with_one_error_line(tiny, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["mask", *common(tiny, tmp_path)[2:], "--video", str(tmp_path / "nothing.mp4")])
    assert str(exit_info.value.code).startswith("error: --video: Cannot use video") and "does not exist" in str(
        exit_info.value.code
    )
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "correspondence",
                *common(tiny, tmp_path),
                "--pretrained_model_name_or_path",
                str(tiny / "base"),
                "--run_dir",
                str(tiny / "teacher"),
            ]
        )
    assert str(exit_info.value.code).startswith("error: --run_dir") and "neither a LoRA" in str(exit_info.value.code)


def test_without_matplotlib_the_error_names_the_extra(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert "diffusers-tsa[viz]" in VIZ_EXTRA
    with pytest.raises(ImportError, match=r'pip install "diffusers-tsa\[viz\]"'):
        require_matplotlib()
    with pytest.raises(ImportError, match=r"diffusers-tsa\[viz\]"):
        render_motion_masks(torch.zeros(8, 3, 32, 48), torch.ones(1, 4, 2, 3, dtype=torch.bool), [0.2])
    with pytest.raises(SystemExit) as exit_info:
        main(["mask", *common(tiny, tmp_path)])
    assert str(exit_info.value.code) == f"error: Rendering pictures needs matplotlib, an optional extra: {VIZ_EXTRA}"


def test_the_validation_recipe_renders_from_training_tensors(tiny, tmp_path):
    """What a training script does at validation: the metric on `AlignedTransformer`'s projected features against
    `Alignment.targets`, then the pictures of the same tensors, written as PNG."""
    spec = load_spec(tiny / "base")
    adapter = ADAPTERS[spec.family].from_pretrained(spec)
    name = str(tiny / "teacher")
    geometry = teacher_geometry(name, TeacherInput.for_clip(9, 96, 144), teacher_config(name))
    config = AlignmentConfig(
        loss="m-tsa",
        depth=1,
        student_grid=(3, 6, 9),
        student_width=32,
        teacher_grid=TEACHER_GRID,
        teacher_width=32,
        projector_hidden_dim=16,
        teacher=geometry,
    )
    alignment = Alignment.build(config, adapter)
    write_test_dataset(tmp_path / "data", num_clips=1)
    from diffusers_tsa.data import load_video_dataset

    table = load_video_dataset(
        instance_data_root=tmp_path / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    batch = collate_examples([TrainingClips(table, ClipSpec(height=96, width=144, max_num_frames=9))[0]])

    with torch.no_grad():
        _, student = AlignedTransformer(adapter, alignment)(
            adapter.encode_videos(batch["videos"]), adapter.encode_prompts(batch["captions"])
        )
        features, mask = alignment.targets(batch)
    agreement = alignment_agreement(student, features, tau=config.options.temperature, query_mask=mask)
    assert 0 <= agreement.top1 <= 1 and agreement.kl >= 0 and agreement.num_pairs == int(mask.sum()) * 4

    seen = alignment.teacher.prepare(batch["videos"])
    assert torch.equal(teacher_frames(batch["videos"], geometry.input), seen)  # the teacher's frames, no weights
    frames = teacher_frames(batch["videos"], geometry.input, size=(96, 144))[0]  # (8, 3, 96, 144) for display
    queries = salient_queries(seen[0], geometry.tubelet, frame=0, k=2)
    temperatures = [1.0, 0.1]
    maps = {
        name: correspondence_maps(grid[0], query_tokens(TEACHER_GRID, queries), tau=temperatures)
        for name, grid in (("teacher", features), ("student", student))
    }
    picture = render_correspondence(frames, {k: m[:, 0] for k, m in maps.items()}, queries[0], temperatures)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    check_png(save_png(picture, tmp_path / "validation" / "correspondence.png"))
    check_png(save_png(render_motion_masks(frames, mask[0], [config.options.mask_ratio]), tmp_path / "mask.png"))
    video = correspondence_video(frames, {k: m[:, 1] for k, m in maps.items()}, queries[1], temperatures)
    check_mp4(save_mp4(video, tmp_path / "correspondence.mp4", fps=4), TEACHER_GRID[0])


FAMILIES = {
    "cogvideox": (CogVideoXPipeline, tiny_cogvideox_components, (9, 96, 144)),
    "wan": (WanPipeline, tiny_wan_components, (9, 64, 96)),
    "ltx_video": (LTXPipeline, tiny_ltx_video_components, (9, 64, 96)),
    "kandinsky5": (Kandinsky5T2VPipeline, tiny_kandinsky5_components, (9, 32, 48)),
}


def test_every_family_takes_a_timestep():
    for family, adapter_class in ADAPTERS.items():
        parameter = inspect.signature(adapter_class.diffusion_loss).parameters.get("timesteps")
        assert parameter is not None and parameter.default is None, family


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_given_timestep_is_the_one_the_transformer_sees(family, tmp_path, monkeypatch):
    """With `timesteps`, `diffusion_loss` is the training forward with its draw replaced by that timestep."""
    pipeline_class, components, (frames, height, width) = FAMILIES[family]
    pipeline_class(**components()).save_pretrained(tmp_path)
    spec = load_spec(tmp_path)
    adapter = ADAPTERS[spec.family].from_pretrained(spec)
    latents = adapter.encode_videos(torch.rand(1, frames, 3, height, width) * 2 - 1)
    conditioning = adapter.encode_prompts(["a ball"])
    seen = []
    adapter.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(k["timestep"]), with_kwargs=True)

    torch.manual_seed(0)
    fixed = adapter.diffusion_loss(adapter.transformer, latents, conditioning, timesteps=torch.tensor([700]))
    if family == "cogvideox":
        monkeypatch.setattr(torch, "randint", lambda *args, **kwargs: torch.tensor([700]))
    else:
        monkeypatch.setattr(FlowMatching, "sample_sigmas", lambda *args, **kwargs: torch.tensor([0.7]))
    torch.manual_seed(0)
    drawn = adapter.diffusion_loss(adapter.transformer, latents, conditioning)
    assert torch.equal(fixed["diffusion"], drawn["diffusion"])
    assert torch.allclose(seen[0].float(), torch.tensor(700.0)) and torch.equal(seen[0], seen[1])


def test_correspondence_pictures_keep_the_clip_visible_and_carry_their_title():
    """A zero map leaves a white frame nearly white (the clip shows through), the scale's top is not red (the
    colour of the demo's ball), and the title (the training step) is drawn above the maps."""
    from matplotlib import colormaps

    from diffusers_tsa.visualize.render import HEATMAP, heat_alpha

    red, green, _, _ = colormaps[HEATMAP](1.0)
    assert green > 0.8 and red - green < 0.2  # yellow, not red
    np.testing.assert_allclose(heat_alpha(np.array([0.0, 0.5, 1.0, 2.0]), 1.0), [0.1, 0.425, 0.75, 0.75])

    frames = torch.ones(8, 3, 32, 48)  # white
    maps = {"teacher": torch.zeros(1, 4, 2, 3)}
    maps["teacher"][0, :, 0, 0] = 1.0  # the query's cell only
    plain = render_correspondence(frames, maps, (0, 0, 0), [1.0])
    titled = render_correspondence(frames, maps, (0, 0, 0), [1.0], title="Step 40: correspondences")
    assert plain.shape == titled.shape and not np.array_equal(plain[:20], titled[:20])
    # The zero-P cells: the white frame under the scale's bottom colour at 10 % opacity (0.6 before: grey-purple).
    bottom = np.array(colormaps[HEATMAP](0.0)[:3])
    shown = np.round((0.1 * bottom + 0.9) * 255)
    tinted = (np.abs(plain.astype(float) - shown).max(-1) <= 2).sum()
    assert tinted > 0.2 * plain.shape[0] * plain.shape[1]  # 4 panels, 5 of 6 cells each at P = 0: about 38 %
