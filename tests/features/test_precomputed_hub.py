"""The precompute's output travels: it loads with `datasets.load_dataset(folder)` and `load_from_disk(folder)`, is
pushed as a Hub dataset repository (`--push_to_hub`, the upload faked: tests never reach the Hub) with its settings and
every file beside them, and the training script's `--dataset_name` reads such a repository."""

import shutil

import datasets
import huggingface_hub
import pytest

from diffusers_tsa.data import load_video_dataset
from diffusers_tsa.features import FEATURES_COLUMN, MASK_COLUMN, SETTINGS_COLUMN
from diffusers_tsa.features.__main__ import main as precompute
from diffusers_tsa.features.precomputed import precomputed_settings, typed_precomputed_table
from diffusers_tsa.testing import tiny_videomae, write_test_dataset


class FakeHub:
    """`HfApi`'s two calls the push makes, writing the repository to a local folder."""

    root = None
    calls = []

    def create_repo(self, repo_id, *, repo_type, exist_ok):
        FakeHub.calls.append(("create_repo", repo_id, repo_type))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def upload_folder(self, *, folder_path, repo_id, repo_type):
        FakeHub.calls.append(("upload_folder", repo_id, repo_type))
        shutil.copytree(folder_path, FakeHub.root / repo_id)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    tiny_videomae().save_pretrained(root / "teacher")
    write_test_dataset(root / "data", num_clips=2)
    FakeHub.root, FakeHub.calls = root / "hub", []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub, "HfApi", FakeHub)
        precompute(
            [
                *("--instance_data_root", str(root / "data"), "--caption_column", "prompts.txt"),
                *("--video_column", "videos.txt", "--teacher_model_name_or_path", str(root / "teacher")),
                *("--height", "96", "--width", "144", "--max_num_frames", "9", "--decode_workers", "1"),
                *("--output_dir", str(root / "out"), "--push_to_hub", "--hub_dataset_id", "me/balls-vmae"),
            ]
        )
    return root


def test_the_folder_loads_with_load_dataset_and_load_from_disk_alike(pushed):
    from_disk = datasets.load_from_disk(pushed / "out")["train"]
    loaded = datasets.load_dataset(str(pushed / "out"), split="train", cache_dir=str(pushed / "cache"))
    assert loaded.column_names == from_disk.column_names
    assert {"caption", "video", FEATURES_COLUMN, MASK_COLUMN, SETTINGS_COLUMN} <= set(loaded.column_names)
    assert loaded.features == from_disk.features  # the array types travel in the Arrow files
    assert loaded[SETTINGS_COLUMN] == from_disk[SETTINGS_COLUMN]
    assert loaded[0][FEATURES_COLUMN] == from_disk[0][FEATURES_COLUMN]
    assert "configs:" in (pushed / "out" / "README.md").read_text()


def test_the_push_uploads_the_folder_and_training_reads_the_repository(pushed, monkeypatch):
    assert FakeHub.calls == [
        ("create_repo", "me/balls-vmae", "dataset"),
        ("upload_folder", "me/balls-vmae", "dataset"),
    ]
    uploaded = pushed / "hub" / "me" / "balls-vmae"
    assert sorted(p.name for p in (pushed / "out").rglob("*")) == sorted(p.name for p in uploaded.rglob("*"))
    real = datasets.load_dataset

    def from_the_fake_hub(name, *args, **kwargs):  # the Hub's `load_dataset(repo_id)` reads the same files
        kwargs["cache_dir"] = str(pushed / "hub-cache")  # not a table another run of this test left in the cache
        return real(str(pushed / "hub" / name), *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", from_the_fake_hub)
    table = load_video_dataset("me/balls-vmae", caption_column="prompts.txt", video_column="videos.txt")
    settings = precomputed_settings(table, FEATURES_COLUMN)
    assert tuple(settings["grid"]) == (4, 2, 3) and len(table) == 2
    assert typed_precomputed_table(table, FEATURES_COLUMN).features == table.features
