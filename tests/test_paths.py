"""Telling local paths from Hub ids (`diffusers_tsa.paths`), and where each command applies it."""

import pytest

from diffusers_tsa.errors import UsageError
from diffusers_tsa.eval.common import EvalInputError
from diffusers_tsa.eval.generate import model_source
from diffusers_tsa.eval.prompts import read_table
from diffusers_tsa.paths import check_local_path, hub_unreachable, looks_like_local_path, refuse_unreachable_hub


PATHS = [
    "./missing_model",
    "../missing_model",
    "missing_model/",
    "owner/name/",
    "~/missing_model",
    "/abs/missing_model",
    "runs/x.safetensors",
    "a/b/c",
    r"C:\models\student",
    r"models\student",
    "C:/models",
    "D:model",
]
HUB_IDS = [
    "x",
    "THUDM/CogVideoX-2b",
    "THUDM/CogVideoX1.5-5B",
    "Lightricks/LTX-Video-0.9.5",
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    "MCG-NJU/videomae-base",
    "facebook/vjepa2-vitl-fpc64-256",
    "user/model.v1.0",
]


@pytest.mark.parametrize("value", PATHS)
def test_paths_are_paths(value):
    assert looks_like_local_path(value)


@pytest.mark.parametrize("value", HUB_IDS)
def test_hub_ids_with_dots_are_hub_ids(value):
    assert not looks_like_local_path(value)
    check_local_path(value, "pretrained_model_name_or_path")


@pytest.mark.parametrize("value", PATHS)
def test_a_missing_path_is_refused_naming_the_argument(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"`pretrained_model_name_or_path=.*` looks like a local path"):
        check_local_path(value, "pretrained_model_name_or_path")


@pytest.mark.parametrize("value", ["./model", "../model", "model/", "~/model"])
def test_an_existing_relative_or_home_path_passes(tmp_path, monkeypatch, value):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "model").mkdir(parents=True)
    (tmp_path / "home" / "work").mkdir()
    monkeypatch.chdir(tmp_path / "home" / ("work" if value.startswith("../") else ""))
    check_local_path(value, "pretrained_model_name_or_path")


@pytest.mark.parametrize("value", ["./missing_model", "../missing_model", "missing_model/", "~/missing_model"])
def test_eval_refuses_missing_paths_before_any_download(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvalInputError, match="no such folder"):
        model_source("--lora", value)
    with pytest.raises(EvalInputError, match="neither an existing file nor a Hub dataset id"):
        read_table(value)
    assert model_source("--lora", "Lightricks/LTX-Video-0.9.5") == "Lightricks/LTX-Video-0.9.5"


def test_one_slash_under_an_existing_folder_is_a_path_and_its_typo_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny" / "videomae").mkdir(parents=True)
    assert looks_like_local_path("tiny/videomea") and not looks_like_local_path("MCG-NJU/videomae-base")
    check_local_path("tiny/videomae", "name_or_path")
    with pytest.raises(UsageError, match=r"`name_or_path='tiny/videomea'` looks.*did you mean 'tiny/videomae'\?"):
        check_local_path("tiny/videomea", "name_or_path")
    with pytest.raises(EvalInputError, match="no such folder"):
        model_source("--pretrained_model_name_or_path", "tiny/videomea")


def offline_failure():
    """What transformers and diffusers raise for a Hub id with no connection (or `HF_HUB_OFFLINE=1`) and no cache."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    error = OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    error.__cause__ = LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
    return error


def test_an_unreachable_hub_id_is_one_line_naming_the_flag(monkeypatch):
    import transformers

    from diffusers_tsa.cli import translate
    from diffusers_tsa.teachers.loading import teacher_config

    error = offline_failure()
    assert hub_unreachable(error) and not hub_unreachable(OSError("no config.json"))
    refuse_unreachable_hub(OSError("no config.json"), "owner/name", "name_or_path")  # left to the caller

    def offline(*args, **kwargs):
        raise offline_failure()

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as err:
        teacher_config("owner/teacher")
    message = translate(str(err.value))
    assert "\n" not in message
    assert message.startswith("--teacher_model_name_or_path='owner/teacher' is not a local path")
    assert "Hub cannot be reached (HF_HUB_OFFLINE is set)" in message


def test_a_dataset_from_an_unreachable_hub_is_one_line(monkeypatch):
    import datasets

    from diffusers_tsa.data import load_video_dataset

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'owner/clips' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        UsageError, match=r"^`dataset_name='owner/clips'` is not a local path .* Hub cannot be reached"
    ):
        load_video_dataset("owner/clips")


def test_labels_from_an_unreachable_hub_are_one_line(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'videophysics/videophy2_test' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(EvalInputError, match=r"^--labels owner/labels: the Hub cannot be reached.*--labels none"):
        read_table("owner/labels", flag="--labels")
