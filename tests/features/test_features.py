"""TeacherFeatures through `dataset.map`: columns, values, bad clips, cache reuse, and the CLI."""

import json

import datasets
import numpy as np
import pytest
import torch

from diffusers_tsa.data import ClipSpec, read_video
from diffusers_tsa.features import TeacherFeatures, decode_teacher_features
from diffusers_tsa.features.__main__ import main
from diffusers_tsa.masking import motion_saliency_mask
from diffusers_tsa.teachers import ImageTeacher, TeacherInput, VideoMAETeacher
from diffusers_tsa.testing import tiny_dinov2, tiny_videomae, write_test_clip


CLIP = ClipSpec(height=96, width=144, max_num_frames=9)


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    """A saved table of two good clips and one corrupt file (saved, so `map` writes and reuses cache files)."""
    root = tmp_path_factory.mktemp("clips")
    write_test_clip(root / "a.mp4", num_frames=9, speed=6)
    write_test_clip(root / "b.mp4", num_frames=10, speed=-3, square=16)
    (root / "bad.mp4").write_bytes(b"\x00" * 2048)
    paths = [str(root / name) for name in ("a.mp4", "bad.mp4", "b.mp4")]
    datasets.Dataset.from_dict({"caption": ["a", "bad", "b"], "video": paths}).save_to_disk(root / "table")
    return root


def _teacher():
    return VideoMAETeacher(tiny_videomae(), name="tiny", input=TeacherInput.for_clip(9, 96, 144))


def _image_teacher():
    input = TeacherInput.for_clip(9, 96, 144, patch_size=14, tubelet_size=1)  # 8 frames at 28x42
    return ImageTeacher(tiny_dinov2(num_register_tokens=2), name="tiny-dinov2", input=input)


@pytest.mark.parametrize(
    "make_teacher, grid, tubelet",
    [(_teacher, (4, 2, 3), (2, 16, 16)), (_image_teacher, (8, 2, 3), (1, 14, 14))],
    ids=["video-teacher", "image-teacher"],
)
def test_columns_dtypes_values_and_bad_rows(table_dir, make_teacher, grid, tubelet):
    table = datasets.load_from_disk(table_dir / "table")
    transform = TeacherFeatures(make_teacher(), CLIP, teacher_batch_size=1)
    mapped = transform.map(table, batch_size=3)
    assert mapped.column_names == [
        "caption",
        "video",
        "teacher_features",
        "motion_mask",
        "teacher_valid",
        "teacher_settings",
        "teacher_checksum",
    ]
    assert set(mapped["teacher_settings"]) == {json.dumps(transform.settings(), sort_keys=True)}
    assert mapped.features["teacher_features"] == datasets.Array4D((*grid, 32), "float16")
    assert mapped.features["motion_mask"] == datasets.Array3D(grid, "bool")
    assert mapped["teacher_valid"] == [True, False, True] and transform.num_invalid == 1
    assert mapped[1]["teacher_features"] is None and mapped[1]["motion_mask"] is None
    assert str(mapped.data.column("teacher_features").type.value_type) == "float16"  # stored bytes, 2 per value
    teacher = make_teacher()
    rows = mapped.with_format("numpy")
    for row in (0, 2):
        frames = teacher.prepare(read_video(table[row]["video"], CLIP)[None])
        expected = teacher.encode_prepared(frames)[0]
        stored = rows[row]["teacher_features"]
        torch.testing.assert_close(torch.from_numpy(stored).float(), expected, atol=2e-3, rtol=2e-3)
        mask = motion_saliency_mask(frames, tubelet=tubelet, ratio=0.2)[0]
        assert np.array_equal(rows[row]["motion_mask"], mask.numpy())


def test_cache_is_reused_only_when_nothing_changed(table_dir, caplog):
    table = datasets.load_from_disk(table_dir / "table")
    first = TeacherFeatures(_teacher(), CLIP)
    with caplog.at_level("INFO", logger="diffusers_tsa.features"):
        first.map(table, load_from_cache_file=False)  # computed (and cached) afresh
        assert "Reusing the teacher features cached" not in caplog.text
        same = TeacherFeatures(_teacher(), CLIP)
        assert same.fingerprint == first.fingerprint
        same.map(table)
    assert same.num_invalid == 0  # loaded from the cache: the corrupt clip was never read again
    assert f"Reusing the teacher features cached in {table_dir / 'table'}" in caplog.text
    for changed in (
        TeacherFeatures(_teacher(), CLIP, mask_ratio=0.3),
        TeacherFeatures(_teacher(), CLIP, storage_dtype="bfloat16"),
        TeacherFeatures(_teacher(), ClipSpec(height=96, width=144, max_num_frames=9, reshape_mode="stretch")),
        TeacherFeatures(VideoMAETeacher(tiny_videomae(seed=1), name="tiny", input=_teacher().input), CLIP),
    ):
        assert changed.fingerprint != first.fingerprint
        changed.map(table)
        assert changed.num_invalid == 1  # recomputed


def test_bfloat16_storage_round_trips(table_dir):
    table = datasets.load_from_disk(table_dir / "table").select([0])
    half = TeacherFeatures(_teacher(), CLIP).map(table, load_from_cache_file=False)
    brain = TeacherFeatures(_teacher(), CLIP, storage_dtype="bfloat16").map(table, load_from_cache_file=False)
    stored_dtype = brain.features["teacher_features"].dtype
    assert stored_dtype == "uint16"
    expected = torch.from_numpy(half.with_format("numpy")[0]["teacher_features"]).float()
    for fmt in ("numpy", "torch"):
        features = decode_teacher_features(brain.with_format(fmt)[0]["teacher_features"], stored_dtype)
        assert features.dtype == torch.float32
        torch.testing.assert_close(features, expected.to(torch.bfloat16).float(), atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(decode_teacher_features(np.array([[-1.5]]), "float16"), torch.tensor([[-1.5]]))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="deterministic crop"):
        TeacherFeatures(_teacher(), ClipSpec(height=96, width=144, max_num_frames=9, reshape_mode="random"))
    with pytest.raises(ValueError, match="`storage_dtype='float64'` must be one of"):
        TeacherFeatures(_teacher(), CLIP, storage_dtype="float64")


def test_cli_precomputes_a_csv_dataset(table_dir, tmp_path):
    _teacher().backbone.save_pretrained(tmp_path / "teacher")
    metadata = tmp_path / "metadata.csv"
    metadata.write_text(f"text,video\na,{table_dir / 'a.mp4'}\nbad,{table_dir / 'bad.mp4'}\n")
    main(
        [
            "--dataset_name", str(metadata), "--teacher_model_name_or_path", str(tmp_path / "teacher"),
            "--height", "96", "--width", "144", "--max_num_frames", "9",
            "--output_dir", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    saved = datasets.load_from_disk(tmp_path / "out")["train"]
    assert saved["teacher_valid"] == [True, False] and saved.features["teacher_features"].shape == (4, 2, 3, 32)
    (settings,) = set(saved["teacher_settings"])
    settings = json.loads(settings)
    assert (
        settings["grid"] == [4, 2, 3] and settings["storage_dtype"] == "float16" and settings["clip"]["height"] == 96
    )


def _nan_teacher():
    backbone = tiny_videomae()
    with torch.no_grad():
        backbone.encoder.layer[0].attention.output.dense.weight.fill_(float("nan"))  # a broken teacher checkpoint
    return VideoMAETeacher(backbone, name="nan", input=TeacherInput.for_clip(9, 96, 144))


def test_non_finite_features_are_marked_invalid_and_counted(table_dir, caplog):
    table = datasets.load_from_disk(table_dir / "table")
    transform = TeacherFeatures(_nan_teacher(), CLIP)
    mapped = transform.map(table, load_from_cache_file=False)
    assert mapped["teacher_valid"] == [False, False, False]
    assert transform.num_non_finite == 2 and transform.num_invalid == 3  # 2 NaN, 1 unreadable
    assert f"the teacher's features of {table_dir / 'a.mp4'} are not finite in float16" in caplog.text


def test_cli_fails_when_no_clip_gives_usable_features(table_dir, tmp_path):
    from diffusers_tsa.errors import DatasetError

    _nan_teacher().backbone.save_pretrained(tmp_path / "teacher")
    metadata = tmp_path / "metadata.csv"
    metadata.write_text(f"text,video\na,{table_dir / 'a.mp4'}\nbad,{table_dir / 'bad.mp4'}\n")
    with pytest.raises(DatasetError, match="None of the 2 clips gave usable teacher features"):
        main([
            "--dataset_name", str(metadata), "--teacher_model_name_or_path", str(tmp_path / "teacher"),
            "--height", "96", "--width", "144", "--max_num_frames", "9", "--output_dir", str(tmp_path / "out"),
        ])  # fmt: skip


def test_the_command_line_runs_as_a_module_without_warnings():
    """`python -m diffusers_tsa.features`: the package is imported once, not again as `__main__` (runpy warns)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "default", "-m", "diffusers_tsa.features", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--teacher_model_name_or_path" in result.stdout
    assert "Warning" not in result.stderr, result.stderr


# --- Verified rows: checksums written by the precompute, checked when training reads them -------------------------


@pytest.fixture
def saved_features(table_dir, tmp_path):
    """The teacher features of the two good clips, saved as the precompute saves them; returns the folder."""
    mapped = TeacherFeatures(_teacher(), CLIP, teacher_batch_size=1).map(
        datasets.load_from_disk(table_dir / "table"), batch_size=3
    )
    mapped.filter(lambda valid: valid, input_columns="teacher_valid").save_to_disk(tmp_path / "features")
    return tmp_path / "features"


def test_a_row_whose_bytes_changed_is_skipped_and_named_by_file_and_row(saved_features):
    """Flipping the lowest bit of some stored features keeps them finite: without the checksum nothing would notice.
    The row is skipped as an unreadable clip is (another row stands in), named by its file and row."""
    from diffusers_tsa.features.precomputed import typed_precomputed_table
    from diffusers_tsa.training import CorruptRows, TrainingClips

    (arrow,) = saved_features.glob("*.arrow")
    table = typed_precomputed_table(datasets.load_from_disk(saved_features), "teacher_features")
    clean = TrainingClips(table, CLIP, features_column="teacher_features", decode_videos=False)
    first = clean[0]["teacher_features"]
    assert clean[0]["skipped"] == [] and clean[0]["corrupt_rows"] == []
    data = bytearray(arrow.read_bytes())
    offset = bytes(data).index(first.numpy().tobytes()[:64]) + 10  # inside row 0's features
    data[offset] ^= 1  # a float16 mantissa bit: the value stays finite
    arrow.write_bytes(bytes(data))
    table = typed_precomputed_table(datasets.load_from_disk(saved_features), "teacher_features")
    damaged = TrainingClips(table, CLIP, features_column="teacher_features", decode_videos=False)
    example = damaged[0]
    assert example["corrupt_rows"] == [f"{arrow} row 0"]
    ((source, reason),) = example["skipped"]
    assert source == f"{arrow} row 0" and "do not match the checksum stored with them" in reason
    torch.testing.assert_close(example["teacher_features"], clean[1]["teacher_features"])  # row 1 stands in
    counted = CorruptRows(num_rows=len(damaged), max_share=0.5)
    counted.add(example["corrupt_rows"])
    counted.add(example["corrupt_rows"])  # counted once
    assert len(counted) == 1


def test_training_stops_in_one_line_past_the_share_of_corrupt_rows():
    from diffusers_tsa.errors import DatasetError
    from diffusers_tsa.training import CorruptRows

    rows = CorruptRows(num_rows=100, max_share=0.01)
    rows.add(["data.arrow row 3"])
    with pytest.raises(DatasetError, match=r"2 of the 100 precomputed rows are corrupt .*max_corrupt_row_share=0.01"):
        rows.add(["data.arrow row 7"])


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_truncated_or_missing_file_is_one_error_naming_it(saved_features, damage):
    from diffusers_tsa.data import load_video_dataset
    from diffusers_tsa.errors import DatasetError

    (arrow,) = saved_features.glob("*.arrow")
    if damage == "truncated":
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    else:
        arrow.unlink()
    with pytest.raises(DatasetError) as caught:
        load_video_dataset(str(saved_features), caption_column="caption", video_column="video")
    message = str(caught.value)
    assert "\n" not in message and str(arrow) in message and "precompute it again" in message
    assert ("is damaged or cut short" if damage == "truncated" else "is missing") in message
