"""Clip decoding (diffusers' CogVideoX example rules) and the three caption/video sources."""

import os
from pathlib import Path

import datasets
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from diffusers_tsa.cli import translate
from diffusers_tsa.data import (
    VIDEO_BACKENDS,
    ClipSpec,
    available_video_backends,
    load_video_dataset,
    read_video,
    select_frame_indices,
    use_video_backend,
)
from diffusers_tsa.data import video as video_module
from diffusers_tsa.data.video import VIDEO_BACKEND_ENV
from diffusers_tsa.errors import UsageError, VideoDecodeError
from diffusers_tsa.testing import write_test_clip


pytestmark = pytest.mark.minimum  # `make test-minimum`'s fast subset


REAL_VIDEOS = Path(__file__).parents[3] / "shared" / "data" / "videos"
SPEC = ClipSpec(height=96, width=144, max_num_frames=9)


@pytest.mark.parametrize(
    "total, spec, expected",
    [
        (100, ClipSpec(max_num_frames=49), list(range(0, 98, 2))),  # stride 100 // 49 = 2, first 49 kept
        (30, ClipSpec(max_num_frames=49), list(range(29))),  # all 30, trimmed to 4k+1 = 29
        (20, ClipSpec(max_num_frames=49, skip_frames_start=3, skip_frames_end=2), list(range(3, 16))),  # 15 -> 13
        (30, ClipSpec(max_num_frames=9), list(range(0, 27, 3))),  # stride 3
        (5, ClipSpec(skip_frames_start=5), []),
        (4, ClipSpec(), [0]),  # 4 frames trim to 1 (4k+1)
    ],
)
def test_frame_indices_follow_the_cogvideox_example(total, spec, expected):
    assert select_frame_indices(total, spec) == expected


def test_num_frames_is_4k_plus_1():
    assert [ClipSpec(max_num_frames=n).num_frames for n in (49, 48, 13, 12, 1)] == [49, 45, 13, 9, 1]


def test_decoded_frames_are_the_selected_ones(tmp_path):
    # Frame t has background gray 16 + 7 t; 30 frames with max 9 give frames 0, 3, ..., 24.
    path = tmp_path / "gray.mp4"
    write_test_clip(path, num_frames=30, gray_step=7, speed=0)
    video = read_video(path, SPEC)
    assert video.shape == (9, 3, 96, 144) and video.dtype == torch.float32
    corner = video[:, :, :8, :8].mean(dim=(1, 2, 3))  # background only
    expected = torch.tensor([(16 + 7 * t) / 127.5 - 1 for t in range(0, 27, 3)])
    torch.testing.assert_close(corner, expected, atol=0.03, rtol=0)


@pytest.mark.parametrize("mode", ["center", "none"])
def test_resize_and_crop_put_the_square_where_expected(tmp_path, mode):
    # 96x160 source: "center" resizes to 96x160 (height already matches) and crops 8 px from each side,
    # "none" squeezes the width by 144 / 160.
    path = tmp_path / "square.mp4"
    write_test_clip(path, num_frames=9, speed=6)
    video = read_video(path, ClipSpec(height=96, width=144, max_num_frames=9, reshape_mode=mode))
    assert video.shape == (9, 3, 96, 144)
    assert video.min() >= -1 and video.max() <= 1 and video.min() < -0.8 and video.max() > 0.8
    columns = (video[:, 0] > 0).float().mean(dim=1)  # (T, W): share of bright rows per column
    centre = (columns * torch.arange(144)).sum(-1) / columns.sum(-1)
    scale, shift = (1.0, -8.0) if mode == "center" else (144 / 160, 0.0)
    expected = torch.tensor([(4 + 6 * t + 12) * scale + shift - 0.5 for t in range(2, 9)])  # t < 2: cut by crop
    torch.testing.assert_close(centre[2:], expected, atol=1.0, rtol=0)


def test_random_crop_is_driven_by_the_generator(tmp_path):
    path = tmp_path / "square.mp4"
    write_test_clip(path, num_frames=9, height=128, width=160)
    spec = ClipSpec(height=96, width=96, max_num_frames=9, reshape_mode="random")
    first = read_video(path, spec, generator=torch.Generator().manual_seed(1))
    again = read_video(path, spec, generator=torch.Generator().manual_seed(1))
    assert first.shape == (9, 3, 96, 96) and torch.equal(first, again)


@pytest.mark.parametrize("axis", ["width", "height"])
def test_random_crops_vary_and_cover_the_slack(axis):
    """A source already at the covering size (8 x 12, or 12 x 8, for an 8 x 8 clip) is only cropped: every offset
    from 0 to the 4-pixel slack of the long axis is drawn, the short axis is never offset."""
    from diffusers_tsa.data.video import _resize_and_crop

    ramp = torch.arange(12.0)  # each pixel holds its index along the long axis
    wide, tall = ramp.view(1, 1, 1, 12).expand(1, 3, 8, 12), ramp.view(1, 1, 12, 1).expand(1, 3, 12, 8)
    frames = wide if axis == "width" else tall
    spec = ClipSpec(height=8, width=8, max_num_frames=1, reshape_mode="random")
    offsets = set()
    for seed in range(200):
        crop = _resize_and_crop(frames, spec, torch.Generator().manual_seed(seed))
        assert crop.shape == (1, 3, 8, 8)
        long_axis = crop[0, 0, 0] if axis == "width" else crop[0, 0, :, 0]
        assert torch.equal(long_axis, ramp[:8] + long_axis[0])  # a contiguous window, no resampling
        offsets.add(int(long_axis[0]))
    assert offsets == {0, 1, 2, 3, 4}


def test_bad_clips_raise_one_typed_error(tmp_path):
    good = tmp_path / "good.mp4"
    write_test_clip(good, num_frames=12)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    short = tmp_path / "short.mp4"
    write_test_clip(short, num_frames=5)
    text = tmp_path / "caption.txt"  # decord opens a text file as a one-frame clip
    text.write_text("a caption listed as a video\n")
    reasons = {}
    for path in (truncated, garbage, short, text, tmp_path / "missing.mp4"):
        with pytest.raises(VideoDecodeError) as err:
            read_video(path, SPEC)
        assert err.value.source == str(path)
        reasons[path.name] = err.value.reason
    assert "5 frames" in reasons["short.mp4"] and "9 required" in reasons["short.mp4"]
    assert "does not exist" in reasons["missing.mp4"]
    assert "it is not a video" in reasons["caption.txt"] and "frames, which give" not in reasons["caption.txt"]
    assert read_video(short, ClipSpec(height=96, width=144, max_num_frames=5)).shape[0] == 5


def _write_clips(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_test_clip(folder / name, num_frames=9)


def test_folder_with_text_files(tmp_path):
    _write_clips(tmp_path / "clips", ["a.mp4", "b.mp4"])
    (tmp_path / "prompts.txt").write_text("a ball falls\na ball bounces\n")
    (tmp_path / "videos.txt").write_text("clips/a.mp4\nclips/b.mp4\n")
    table = load_video_dataset(instance_data_root=tmp_path, caption_column="prompts.txt", video_column="videos.txt")
    assert table["caption"] == ["a ball falls", "a ball bounces"]
    assert table["video"] == [str(tmp_path / "clips" / "a.mp4"), str(tmp_path / "clips" / "b.mp4")]
    (tmp_path / "videos.txt").write_text("clips/a.mp4\n")
    with pytest.raises(ValueError, match="2 captions but .* 1 video paths"):
        load_video_dataset(instance_data_root=tmp_path, caption_column="prompts.txt", video_column="videos.txt")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_metadata_file_paths_are_relative_to_it(tmp_path, suffix):
    _write_clips(tmp_path / "clips", ["a.mp4"])
    rows = datasets.Dataset.from_dict({"prompt": ["a ball"], "file": ["clips/a.mp4"], "id": [7]})
    metadata = tmp_path / f"metadata{suffix}"
    rows.to_csv(metadata, index=False) if suffix == ".csv" else rows.to_json(metadata)
    table = load_video_dataset(str(metadata), caption_column="prompt", video_column="file")
    assert table["video"] == [str(tmp_path / "clips" / "a.mp4")] and table["id"] == [7]
    assert read_video(table[0]["video"], SPEC).shape == (9, 3, 96, 144)
    with pytest.raises(ValueError, match="`video_column='path'`"):
        load_video_dataset(str(metadata), caption_column="prompt", video_column="path")


def test_saved_dataset_with_a_video_feature_is_read_without_torchcodec(tmp_path):
    _write_clips(tmp_path, ["a.mp4"])
    table = datasets.Dataset.from_dict({"text": ["a ball"], "clip": [str(tmp_path / "a.mp4")]})
    table.cast_column("clip", datasets.Video()).save_to_disk(tmp_path / "saved")
    loaded = load_video_dataset(str(tmp_path / "saved"), video_column="clip")
    assert loaded.features["video"] == datasets.Video(decode=False)
    value = loaded[0]["video"]
    assert read_video(value, SPEC).shape == (9, 3, 96, 144)
    assert read_video({"bytes": (tmp_path / "a.mp4").read_bytes(), "path": None}, SPEC).shape[0] == 9


def test_a_clip_decord_cannot_read_falls_back_to_ffmpeg(tmp_path):
    """decord fails on some narrow clips (48 px wide here, a stride mismatch); ffmpeg decodes the same frames."""
    write_test_clip(tmp_path / "narrow.mp4", height=32, width=48, square=8, speed=4)
    write_test_clip(tmp_path / "wide.mp4", height=32, width=64, square=8)
    spec = ClipSpec(height=32, width=48, max_num_frames=9, reshape_mode="stretch")
    narrow = read_video(tmp_path / "narrow.mp4", spec)
    assert narrow.shape == (9, 3, 32, 48)
    assert read_video((tmp_path / "narrow.mp4").read_bytes(), spec).equal(narrow)
    # The square's left edge is where it was drawn in every frame: x = 4 + 4 t.
    left_edges = (narrow.amax(dim=(1, 2)) > 0).float().argmax(dim=1)
    assert (left_edges - torch.tensor([4 + 4 * t for t in range(9)])).abs().max() <= 1


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_every_installed_backend_reads_the_kept_frames_alike(backend, tmp_path):
    """Each decoder, from a path and from bytes, gives the frames imageio-ffmpeg's full decode has at the kept
    indices (within 3/255: the colour conversion's rounding); only an absent decoder skips."""
    if backend not in available_video_backends():
        pytest.skip(f"{backend} is not installed")
    path = tmp_path / "clip.mp4"
    write_test_clip(path, height=32, width=64, square=8, num_frames=20)
    spec = ClipSpec(height=32, width=64, max_num_frames=5, skip_frames_start=2)  # stride 18 // 5 = 3: 2, 5, .., 14
    frames = imageio_ffmpeg.read_frames(str(path))
    width, height = next(frames)["size"]
    full = np.stack([np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in frames])
    expected = torch.from_numpy(full[[2, 5, 8, 11, 14]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    for source in (path, path.read_bytes()):
        assert (read_video(source, spec, backend=backend) - expected).abs().max() <= 3 / 127.5 + 1e-6


def test_the_video_backend_is_checked_and_reaches_worker_processes(monkeypatch):
    monkeypatch.delenv(VIDEO_BACKEND_ENV, raising=False)
    with pytest.raises(UsageError, match=r"`video_backend='pyav'` must be 'auto' or one of"):
        use_video_backend("pyav")
    monkeypatch.setattr(video_module, "available_video_backends", lambda: ("imageio-ffmpeg",))
    with pytest.raises(UsageError, match=r"`video_backend='torchcodec'` is not installed: `pip install torchcodec`"):
        use_video_backend("torchcodec")
    assert (
        translate("`video_backend='torchcodec'` is not installed") == "--video_backend='torchcodec' is not installed"
    )
    use_video_backend("imageio-ffmpeg")
    assert os.environ[VIDEO_BACKEND_ENV] == "imageio-ffmpeg"  # inherited by spawned data-loader workers


def test_text_that_is_not_utf8_names_the_file_and_line(tmp_path):
    _write_clips(tmp_path / "clips", ["a.mp4", "b.mp4"])
    (tmp_path / "prompts.txt").write_bytes("a ball falls\na ball bounces off a caf\u00e9 wall\n".encode("latin-1"))
    (tmp_path / "videos.txt").write_text("clips/a.mp4\nclips/b.mp4\n")
    with pytest.raises(ValueError, match=r"prompts.txt, line 2, is not UTF-8 text .* for `caption_column`"):
        load_video_dataset(instance_data_root=tmp_path, caption_column="prompts.txt", video_column="videos.txt")
    metadata = tmp_path / "metadata.csv"
    metadata.write_bytes("text,video\nok,clips/a.mp4\ncaf\u00e9,clips/b.mp4\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"metadata.csv, line 3, is not UTF-8 text .* for `dataset_name`"):
        load_video_dataset(str(metadata))


def test_empty_captions_load_as_empty_values(tmp_path):
    _write_clips(tmp_path / "clips", ["a.mp4", "b.mp4"])
    (tmp_path / "metadata.csv").write_text("text,video\n,clips/a.mp4\na ball,clips/b.mp4\n")
    table = load_video_dataset(str(tmp_path / "metadata.csv"))
    assert table["caption"] == [None, "a ball"]


@pytest.mark.parametrize("value", ["./data/clips.csv", "data/clips.csv", "/no/such/folder", "a/b/c", "runs/x.pth"])
def test_a_missing_local_path_is_refused_at_once(tmp_path, monkeypatch, value):
    from diffusers_tsa.paths import check_local_path

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"`dataset_name='{value}'` looks like a local path, but nothing exists"):
        load_video_dataset(value)
    for hub_id in ("THUDM/CogVideoX-2b", "Lightricks/LTX-Video-0.9.5", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "x"):
        check_local_path(hub_id, "dataset_name")  # Hub ids pass


def test_an_instance_data_root_that_is_not_a_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"`instance_data_root='.*no_such_dir'` is not a folder"):
        load_video_dataset(instance_data_root=tmp_path / "no_such_dir", caption_column="p.txt", video_column="v.txt")


REAL_CLIPS = sorted(REAL_VIDEOS.glob("*.mp4")) if REAL_VIDEOS.is_dir() else []


@pytest.mark.skipif(not REAL_CLIPS, reason=f"no real clips (*.mp4) in {REAL_VIDEOS}")
@pytest.mark.parametrize("path", REAL_CLIPS, ids=lambda p: p.name)
def test_real_clips_decode_at_the_paper_size(path):
    video = read_video(path, ClipSpec())
    assert video.shape == (49, 3, 480, 720)
    assert -1 <= video.min() < -0.5 and 0.5 < video.max() <= 1


def test_a_pipelines_truncation_warning_is_shown_once_and_counted():
    """diffusers' pipelines warn for each prompt longer than `max_sequence_length` (with the cut tokens): under
    `PipelineTruncations` the first warning goes through, the rest are counted, other warnings pass."""
    import io
    import logging

    import diffusers  # noqa: F401  (sets up the `diffusers` logger and its handler)

    from diffusers_tsa.cli import translate
    from diffusers_tsa.data.truncation import PipelineTruncations

    pipeline = logging.getLogger("diffusers.pipelines.cogvideo.pipeline_cogvideox")
    handler = logging.StreamHandler(io.StringIO())  # beside diffusers' own, which gets the same filter
    logging.getLogger("diffusers").addHandler(handler)
    try:
        with PipelineTruncations().installed() as truncations:
            for cut in ("a b", "c d", "e f"):
                pipeline.warning(
                    "The following part of your input was truncated because `max_sequence_length` is set to  16 "
                    f"tokens: ['{cut}']"
                )
            pipeline.warning("another warning")
        pipeline.warning("The following part of your input was truncated because `max_sequence_length` is set ...")
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    shown = handler.stream.getvalue()
    assert truncations.count == 3 and shown.count("was truncated") == 2  # the first, and one outside the block
    assert "['a b']" in shown and "['c d']" not in shown and "another warning" in shown
    assert translate(truncations.summary(16)).startswith(
        "3 prompt(s) were longer than --max_sequence_length=16 tokens"
    )
