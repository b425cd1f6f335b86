"""VBench: completeness check, strict results parsing and the leaderboard aggregation; the real VBench run when a
VBench environment is named by VBENCH_PYTHON."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from diffusers_tsa.eval import vbench
from diffusers_tsa.eval.common import EvalInputError, EvaluatorOutputError, exit_on_user_error


# Raw scores chosen so that each normalised score f = (s - min) / (max - min) is a round number.
F = {
    "subject_consistency": 0.5,
    "background_consistency": 0.5,
    "temporal_flickering": 1.0,
    "motion_smoothness": 0.5,
    "aesthetic_quality": 0.6,
    "imaging_quality": 0.6,
    "dynamic_degree": 0.4,
    "object_class": 0.8,
    "multiple_objects": 0.8,
    "human_action": 0.8,
    "color": 0.8,
    "spatial_relationship": 0.8,
    "scene": 0.35,
    "appearance_style": 0.8,
    "temporal_style": 0.8,
    "overall_consistency": 0.8,
}
MIN_MAX = {
    "subject_consistency": (0.1462, 1),
    "background_consistency": (0.2615, 1),
    "temporal_flickering": (0.6293, 1),
    "motion_smoothness": (0.706, 0.9975),
    "scene": (0, 0.8222),
    "appearance_style": (0.0009, 0.2855),
    "temporal_style": (0, 0.364),
    "overall_consistency": (0, 0.364),
}
RAW = {
    d: MIN_MAX.get(d, (0, 1))[0] + f * (MIN_MAX.get(d, (0, 1))[1] - MIN_MAX.get(d, (0, 1))[0]) for d, f in F.items()
}


def _results(path: Path, scores: dict) -> Path:
    path.write_text(json.dumps({d: [s, [{"video_path": "x.mp4", "video_results": s}]] for d, s in scores.items()}))
    return path


def test_aggregate_against_hand_computed_scores(tmp_path):
    # Quality: (0.5 + 0.5 + 1 + 0.5 + 0.6 + 0.6 + 0.5 * 0.4) / 6.5 = 3.9 / 6.5 = 0.6
    # Semantic: (8 * 0.8 + 0.35) / 9 = 0.75;  Total: (4 * 0.6 + 0.75) / 5 = 0.63
    half = dict(list(RAW.items())[:8])
    rest = dict(list(RAW.items())[8:])
    files = [_results(tmp_path / "a.json", half), _results(tmp_path / "b.json", rest)]
    result = vbench.aggregate(vbench.load_results(files))
    assert result["quality"] == pytest.approx(60.0)
    assert result["semantic"] == pytest.approx(75.0)
    assert result["total"] == pytest.approx(63.0)
    assert result["normalized"]["scene"] == pytest.approx(35.0)
    assert result["dimensions"]["temporal_flickering"] == pytest.approx(100.0)
    assert result["missing"] == []


def test_missing_dimension_counts_as_raw_zero_and_is_named(tmp_path, caplog):
    result = vbench.aggregate(vbench.load_results([_results(tmp_path / "r.json", {"temporal_flickering": 0.98})]))
    assert "subject_consistency" in result["missing"] and len(result["missing"]) == 15
    assert "subject_consistency" in caplog.text
    assert result["normalized"]["subject_consistency"] == pytest.approx(-0.1462 / 0.8538 * 100)
    expected_quality = (-0.1462 / 0.8538 - 0.2615 / 0.7385 + (0.98 - 0.6293) / 0.3707 - 0.706 / 0.2915) / 6.5
    assert result["quality"] == pytest.approx(100 * expected_quality)
    assert set(result["dimensions"]) == {"temporal_flickering"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a readable VBench results JSON"),
        ("[1, 2]", "expected an object"),
        ('{"temporal_flicker": [0.9, []]}', "unknown dimension 'temporal_flicker'"),
        ('{"temporal_flickering": ["high", []]}', "should be \\[score, per_video\\]"),
        ('{"temporal_flickering": [NaN, []]}', "with a finite score, got '\\[nan"),
    ],
)
def test_malformed_results(tmp_path, content, message):
    (tmp_path / "r.json").write_text(content)
    with pytest.raises(EvaluatorOutputError, match=message):
        vbench.load_results([tmp_path / "r.json"])


def test_conflicting_dimension_across_files(tmp_path):
    a = _results(tmp_path / "a.json", {"color": 0.8})
    b = _results(tmp_path / "b.json", {"color": 0.7})
    with pytest.raises(EvaluatorOutputError, match="color is 0.8 in .*a.json but 0.7 in .*b.json"):
        vbench.load_results([a, b])


INFO = [
    {"prompt_en": "a cat", "dimension": ["temporal_flickering", "subject_consistency"]},
    {"prompt_en": "a dog", "dimension": ["color"]},
    {"prompt_en": "a cat", "dimension": ["dynamic_degree"]},
]


def test_completeness_check(tmp_path):
    """Each dimension's videos lie in the folder of its prompt list (VBench's `dimension_to_folder.json`): dynamic
    degree is evaluated on subject_consistency's videos."""
    names = vbench.expected_videos(INFO, ["temporal_flickering", "dynamic_degree"])
    assert names == [f"temporal_flickering/a cat-{i}.mp4" for i in range(5)] + [
        f"subject_consistency/a cat-{i}.mp4" for i in range(5)
    ]
    videos = tmp_path / "videos"
    for name in names[:8]:
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        (videos / name).write_bytes(b"v")
    with pytest.raises(
        EvalInputError, match=r"2 of 10 VBench videos are missing(.|\n)*subject_consistency/a cat-3.mp4\n  .*a cat-4"
    ):
        vbench.check_videos_dir(videos, names)
    for name in names[8:]:
        (videos / name).write_bytes(b"v")
    vbench.check_videos_dir(videos, names)
    (videos / "subject_consistency" / "manifest.csv").write_text("x")
    with pytest.raises(EvalInputError, match="only the .mp4 videos(.|\n)*subject_consistency/manifest.csv"):
        vbench.check_videos_dir(videos, names)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a cat-0.mp4").write_bytes(b"v")
    with pytest.raises(
        EvalInputError, match=r"holds .mp4 videos itself: VBench evaluates each dimension on the folder"
    ):
        vbench.check_videos_dir(flat, names)


def test_printed_scores_are_rounded_and_the_json_file_keeps_all(tmp_path, capsys):
    results = _results(tmp_path / "r.json", {"color": 0.29, "scene": 0.8222 / 3})
    vbench.main(["aggregate", str(results), "--output_json", str(tmp_path / "scores.json")])
    printed = json.loads(capsys.readouterr().out)
    assert printed["dimensions"] == {"color": 29.0, "scene": 27.4} and printed["normalized"]["scene"] == 33.3
    assert all(v == round(v, 1) for v in [printed["total"], *printed["normalized"].values()])
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["dimensions"] == {"color": 100 * 0.29, "scene": 100 * 0.8222 / 3}
    assert saved["total"] == pytest.approx(printed["total"], abs=0.05) and saved["total"] != round(saved["total"], 1)


def fake_python(path: Path) -> str:
    """A stand-in for an environment's `python` that fails like one without VBench."""
    path.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'vbench'\" >&2\nexit 1\n")
    path.chmod(0o755)
    return str(path)


def test_run_mistakes_end_in_one_line_naming_the_flag(tmp_path):
    videos = tmp_path / "videos"
    (videos / "color").mkdir(parents=True)
    for i in range(5):
        (videos / "color" / f"a dog-{i}.mp4").write_bytes(b"v")
    files = {"info.json": json.dumps(INFO), "broken.json": '[{"prompt_en": ', "nodim.json": '[{"prompt_en": "a dog"}]'}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run = [
        "run",
        "--videos_dir",
        str(videos),
        "--vbench_python",
        fake_python(tmp_path / "python"),
        "--output_dir",
        str(tmp_path / "out"),
        "--dimensions",
        "color",
    ]
    mistakes = [
        ([], "--vbench_python "),  # no VBench there, and no --full_info
        (["--full_info", str(tmp_path / "broken.json")], "--full_info "),
        (["--full_info", str(tmp_path / "nodim.json")], "--full_info entry 1 "),
        (["--full_info", str(tmp_path / "info.json")], "VBench exited with status 1"),  # the videos are all there
    ]
    for extra, start in mistakes:
        with pytest.raises(SystemExit, match=rf"^error: {re.escape(start)}[^\n]*$"):
            exit_on_user_error(lambda: vbench.main([*run, *extra]))


def test_videos_per_prompt_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        vbench.parse_args(
            ["run", "--videos_dir", "v", "--vbench_python", "p", "--output_dir", "o", "--videos_per_prompt", "0"]
        )
    assert "argument --videos_per_prompt: must be at least 1, got 0" in capsys.readouterr().err


def test_run_refuses_unknown_dimensions(tmp_path):
    (tmp_path / "info.json").write_text(json.dumps(INFO))
    with pytest.raises(EvalInputError, match="not VBench dimensions"):
        vbench.main(
            [
                "run",
                "--videos_dir",
                str(tmp_path),
                "--vbench_python",
                os.sys.executable,
                "--full_info",
                str(tmp_path / "info.json"),
                "--output_dir",
                str(tmp_path / "out"),
                "--dimensions",
                "flicker",
            ]
        )


@pytest.mark.optional_suite("real VBench (VBENCH_PYTHON=<a VBench environment's python>; README, Evaluation, VBench)")
@pytest.mark.skipif(not os.environ.get("VBENCH_PYTHON"), reason="set VBENCH_PYTHON to a VBench environment's python")
def test_real_vbench_run_and_aggregate(tmp_path, capsys):
    import imageio

    videos = tmp_path / "videos"
    (videos / "temporal_flickering").mkdir(parents=True)
    info = [{"prompt_en": p, "dimension": ["temporal_flickering"]} for p in ("a still square", "a moving square")]
    (tmp_path / "info.json").write_text(json.dumps(info))
    for k, prompt in enumerate(("a still square", "a moving square")):
        frames = np.zeros((9, 96, 144, 3), np.uint8)
        for t in range(9):
            x = 20 + 8 * t * k
            frames[t, 30:60, x : x + 30] = 255
        imageio.mimwrite(videos / "temporal_flickering" / f"{prompt}-0.mp4", frames, fps=8)
    out = tmp_path / "out"
    vbench.main(
        [
            "run",
            "--videos_dir",
            str(videos),
            "--vbench_python",
            os.environ["VBENCH_PYTHON"],
            "--full_info",
            str(tmp_path / "info.json"),
            "--output_dir",
            str(out),
            "--dimensions",
            "temporal_flickering",
            "--videos_per_prompt",
            "1",
            "--device",
            "cpu",
        ]
    )
    raw = json.loads((out / "results_eval_results.json").read_text())
    assert len(raw["temporal_flickering"][1]) == 2
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "scores.json").read_text())  # full precision; printed with one decimal
    assert saved["dimensions"]["temporal_flickering"] == pytest.approx(100 * raw["temporal_flickering"][0])
    assert printed["dimensions"]["temporal_flickering"] == round(saved["dimensions"]["temporal_flickering"], 1)
    assert 0 < raw["temporal_flickering"][0] <= 1
    vbench.main(["aggregate", str(out / "results_eval_results.json")])
    assert json.loads(capsys.readouterr().out) == printed


FAKE_VBENCH = {
    "vbench/__init__.py": """
import json, os

class VBench:
    def __init__(self, device, full_info, output_path):
        self.output_path = output_path

    def evaluate(self, videos_path, name, dimension_list, mode):
        videos = sorted(os.listdir(videos_path))
        with open(os.path.join(self.output_path, "calls.jsonl"), "a") as f:
            f.write(json.dumps([name, os.path.basename(videos_path), dimension_list, videos, mode]) + "\\n")
        with open(os.path.join(self.output_path, name + "_eval_results.json"), "w") as f:
            json.dump({d: [0.5, []] for d in dimension_list}, f)
""",
    "vbench/utils.py": "def init_submodules(dimension_list):\n    return {}\n",
    "vbench/cli/__init__.py": "",
    "vbench/cli/static_filter.py": """
import os, shutil

def static_filter(args):  # keeps the videos of index < 5 of each prompt, as if those were the static ones
    target = os.path.join(args.result_path, "filtered_videos")
    os.makedirs(target)
    for name in os.listdir(args.videos_path):
        if int(name.rsplit("-", 1)[1][:-4]) < 5:
            shutil.copy(os.path.join(args.videos_path, name), target)

def register_subparsers(subparsers):
    parser = subparsers.add_parser("static_filter")
    parser.add_argument("--videos_path", required=True)
    parser.add_argument("--result_path", default="./filter_results")
    parser.set_defaults(func=static_filter)
""",
}


def test_run_evaluates_each_dimension_on_its_folder_and_can_static_filter(tmp_path, monkeypatch, capsys):
    """Through the driver with a stand-in `vbench` package: one VBench evaluation per folder, results merged; with
    --static_filter, temporal flickering is evaluated on the filtered videos of 25 per prompt."""
    fake = tmp_path / "site"
    for name, text in FAKE_VBENCH.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(text)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "info.json").write_text(json.dumps(INFO))
    videos = tmp_path / "videos"
    for folder, prompt, count in [("subject_consistency", "a cat", 5), ("color", "a dog", 5)]:
        (videos / folder).mkdir(parents=True)
        for i in range(count):
            (videos / folder / f"{prompt}-{i}.mp4").write_bytes(b"v")
    many = tmp_path / "flickering25"
    many.mkdir()
    for i in range(vbench.STATIC_FILTER_VIDEOS):
        (many / f"a cat-{i}.mp4").write_bytes(b"v")
    out = tmp_path / "out"
    run = ["run", "--videos_dir", str(videos), "--vbench_python", os.sys.executable, "--output_dir", str(out)]
    run += ["--full_info", str(tmp_path / "info.json")]
    dims = ["--dimensions", "temporal_flickering", "dynamic_degree", "subject_consistency", "color"]
    with pytest.raises(
        EvalInputError, match=r"5 of 15 VBench videos are missing(.|\n)*temporal_flickering/a cat-0.mp4"
    ):
        vbench.main([*run, *dims])  # without the filter, temporal flickering's own folder is needed
    vbench.main([*run, *dims, "--static_filter", str(many)])
    calls = [json.loads(line) for line in (out / "calls.jsonl").read_text().splitlines()]
    assert [c[:3] for c in calls] == [
        ["results_static_filtered", "filtered_videos", ["temporal_flickering"]],
        ["results_subject_consistency", "subject_consistency", ["dynamic_degree", "subject_consistency"]],
        ["results_color", "color", ["color"]],
    ]
    assert calls[0][3] == [f"a cat-{i}.mp4" for i in range(5)] and {c[4] for c in calls} == {"vbench_standard"}
    merged = json.loads((out / "results_eval_results.json").read_text())
    assert sorted(merged) == ["color", "dynamic_degree", "subject_consistency", "temporal_flickering"]
    assert json.loads(capsys.readouterr().out)["dimensions"]["color"] == 50.0
    with pytest.raises(EvalInputError, match="--static_filter selects temporal flickering's videos"):
        vbench.main([*run, "--dimensions", "color", "--static_filter", str(many)])
    (many / "a cat-24.mp4").unlink()
    with pytest.raises(EvalInputError, match=r"1 of 25 VBench videos are missing in .*flickering25"):
        vbench.main([*run, *dims, "--static_filter", str(many)])
