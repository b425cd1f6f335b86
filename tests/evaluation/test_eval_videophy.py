"""VideoPhy with VideoCon-Physics: inputs, the evaluator call, strict output parsing and Table 1 metrics."""

import csv
import re
import sys
from pathlib import Path

import pytest

from diffusers_tsa.eval import videophy
from diffusers_tsa.eval.common import (
    EvalInputError,
    EvaluatorOutputError,
    VideoRecord,
    exit_on_user_error,
    write_manifest,
)
from diffusers_tsa.eval.physics import prepare_index, read_index


# (caption, category, SA score, PC score)
VIDEOS = [
    ("A ball rolls down a ramp.", "solid_solid", 0.9, 0.2),
    ("A cup falls, and breaks.", "solid_solid", 0.5, 0.49),
    ("Honey drips into tea.", "solid_fluid", 0.1, 0.7),
    ('Oil "floats" on water.', "fluid_fluid", 0.6, 0.5),
]


def make_generation_dir(root: Path, videos) -> Path:
    """A generation folder as eval.generate leaves it (tiny placeholder files stand for the videos)."""
    records = [VideoRecord(c, f"long {c}", f"videos/{c[:8].replace(' ', '_')}.mp4", 42, cat) for c, cat, *_ in videos]
    for r in records:
        (root / r.file).parent.mkdir(parents=True, exist_ok=True)
        (root / r.file).write_bytes(b"video")
    write_manifest(records, root / "manifest.csv")
    return root


@pytest.fixture
def eval_dir(tmp_path):
    gen = make_generation_dir(tmp_path / "gen", VIDEOS)
    out = tmp_path / "eval"
    videophy.main(["prepare", "--generation_dir", str(gen), "--eval_dir", str(out)])
    return out


def write_output(eval_dir: Path, metric: str, rows) -> Path:
    """An output as entailment_inference.py writes it: csv.writer rows, no header."""
    path = eval_dir / videophy.FILES[metric][1]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def well_formed(eval_dir: Path, metric: str, column: int):
    videos = read_index(eval_dir)
    rows = [(v.videopath, videophy.question(metric, v.prompt), s[column]) for v, s in zip(videos, VIDEOS)]
    return list(reversed(rows))  # the join must not rely on row order


def test_prepare_writes_the_benchmark_templates(eval_dir):
    with (eval_dir / "sa_testing.csv").open(newline="") as f:
        sa = list(csv.DictReader(f))
    with (eval_dir / "physics_testing.csv").open(newline="") as f:
        pc = list(csv.DictReader(f))
    assert sa[3]["caption"] == (  # the caption cut at its first period, as VideoREPA builds it for Table 1
        "The following is a conversation between a curious human and AI assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions.\nHuman: <|video|>\n"
        'Human: Does this video entail the description: "Oil "floats" on water"?\nAI: '
    )
    assert pc[0]["caption"].endswith("Human: Does this video follow the physical laws?\nAI: ")
    assert all(Path(r["videopath"]).is_absolute() and Path(r["videopath"]).is_file() for r in sa)
    assert [r["videopath"] for r in sa] == [r["videopath"] for r in pc]


def test_sa_question_quotes_the_first_sentence_and_score_checks_that_text(tmp_path):
    caption = "A glass falls off the table. It shatters into pieces on the floor."
    expected = 'Human: Does this video entail the description: "A glass falls off the table"?\nAI: '
    assert videophy.question("sa", caption).endswith(expected)
    gen = make_generation_dir(tmp_path / "gen", [(caption, "solid_solid", 0.9, 0.2)])
    for form, quoted in (("first_sentence", "A glass falls off the table"), ("full", caption)):
        out = tmp_path / form
        videophy.main(["prepare", "--generation_dir", str(gen), "--eval_dir", str(out), "--sa_caption", form])
        with (out / "sa_testing.csv").open(newline="") as f:
            (row,) = csv.DictReader(f)
        assert row["caption"].endswith(f'description: "{quoted}"?\nAI: ')
        # score accepts answers to the question prepared in that folder, and only those.
        (video,) = read_index(out)
        write_output(out, "sa", [(video.videopath, row["caption"], "0.9")])
        assert videophy.read_output(out / videophy.FILES["sa"][1], [video], "sa") == {video.videopath: 0.9}
        other = videophy.question("sa", caption, "full" if form == "first_sentence" else "first_sentence")
        write_output(out, "sa", [(video.videopath, other, "0.9")])
        with pytest.raises(EvaluatorOutputError, match="not the SA question prepared"):
            videophy.read_output(out / videophy.FILES["sa"][1], [video], "sa")


def test_prepare_lists_missing_videos(tmp_path):
    gen = make_generation_dir(tmp_path / "gen", VIDEOS)
    (gen / "videos" / "Honey_dr.mp4").unlink()
    (gen / "videos" / "A_ball_r.mp4").write_bytes(b"")  # an interrupted write
    with pytest.raises(EvalInputError, match=r"2 of 4 videos are missing(.|\n)*A_ball_r.mp4(.|\n)*Honey_dr.mp4"):
        prepare_index(gen, tmp_path / "eval")


def test_score_against_hand_computed_shares(eval_dir, capsys):
    write_output(eval_dir, "sa", well_formed(eval_dir, "sa", 2))
    write_output(eval_dir, "pc", well_formed(eval_dir, "pc", 3))
    videophy.main(["score", "--eval_dir", str(eval_dir), "--method", "tiny"])
    result = videophy.score(read_index(eval_dir), eval_dir)
    # SA >= 0.5: 0.9, 0.5, 0.6 -> 3/4; PC >= 0.5: 0.7, 0.5 -> 2/4. Solid-solid: SA 2/2, PC 0/2.
    assert result["subsets"]["overall"] == {"n": 4, "sa": 75.0, "pc": 50.0}
    assert result["subsets"]["solid_solid"] == {"n": 2, "sa": 100.0, "pc": 0.0}
    assert result["subsets"]["solid_fluid"] == {"n": 1, "sa": 0.0, "pc": 100.0}
    assert result["subsets"]["fluid_fluid"] == {"n": 1, "sa": 100.0, "pc": 100.0}
    table = capsys.readouterr().out
    assert "| Method | Overall SA | Overall PC | Solid-Solid SA |" in table
    assert "| tiny | 75.0 | 50.0 | 100.0 | 0.0 | 0.0 | 100.0 | 100.0 | 100.0 |" in table
    assert (eval_dir / "scores.json").is_file()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: rows[:2] + [rows[2][:2]] + rows[3:], r"line \d+: expected 3 fields"),
        (
            lambda rows: rows[:1] + [(rows[1][0], rows[1][1], "1.2")] + rows[2:],
            r"line \d+: expected a score in \[0, 1",
        ),
        (lambda rows: rows[:1] + [(rows[1][0], rows[1][1], "nan")] + rows[2:], "expected a score"),
        (lambda rows: rows + [rows[0]], r"lines 1 and \d+: .* scored twice"),
        (lambda rows: rows[1:], "no score for 1 of 4 videos"),
        (lambda rows: rows + [("/elsewhere/x.mp4", "q", "0.5")], "was not prepared"),
    ],
)
def test_malformed_outputs_name_the_line(eval_dir, mutate, message):
    write_output(eval_dir, "sa", mutate(well_formed(eval_dir, "sa", 2)))
    with pytest.raises(EvaluatorOutputError, match=message):
        videophy.read_output(eval_dir / videophy.FILES["sa"][1], read_index(eval_dir), "sa")


def test_line_numbers_count_multiline_records(eval_dir):
    rows = well_formed(eval_dir, "sa", 2)
    rows[2] = (rows[2][0], rows[2][1], "high")
    path = write_output(eval_dir, "sa", rows)
    # Each record spans 4 physical lines (the question has 3 newlines): the third starts on line 9.
    with pytest.raises(EvaluatorOutputError, match=f"{path}, line 9: expected a score"):
        videophy.read_output(path, read_index(eval_dir), "sa")


def test_swapped_sa_and_pc_files_are_caught(eval_dir):
    write_output(eval_dir, "sa", well_formed(eval_dir, "pc", 2))
    with pytest.raises(EvaluatorOutputError, match="not the SA question"):
        videophy.read_output(eval_dir / videophy.FILES["sa"][1], read_index(eval_dir), "sa")


def write_stand_in(repo: Path, *lines: str) -> Path:
    """A stand-in for VideoCon-Physics' script in `repo`: its arguments, then `lines` (which see them as `a`), then
    a score of 0.75 appended for every prepared row, as the real one appends."""
    script = repo / videophy.SCRIPT
    script.parent.mkdir(parents=True)
    script.write_text(
        "\n".join(
            [
                "import argparse, csv, os, sys",
                "p = argparse.ArgumentParser()",
                "[p.add_argument(a) for a in ('--input_csv', '--output_csv', '--checkpoint', '--batch_size')]",
                "a = p.parse_args()",
                *lines,
                "rows = list(csv.DictReader(open(a.input_csv, newline='')))",
                "with open(a.output_csv, 'a', newline='') as f:",
                "    csv.writer(f).writerows([(r['videopath'], r['caption'], 0.75) for r in rows])",
            ]
        )
        + "\n"
    )
    return script


def test_run_calls_the_evaluator_script_from_its_folder(eval_dir, tmp_path):
    """A stand-in for VideoCon-Physics' script records its arguments and appends like the real one."""
    script = write_stand_in(
        tmp_path / "repo", "open('calls.txt', 'a').write(a.checkpoint + ' ' + a.batch_size + '\\n')"
    )
    stale = eval_dir / videophy.FILES["sa"][1]
    stale.write_text("stale,row,0.1\n")
    args = [
        "run",
        "--eval_dir",
        str(eval_dir),
        "--evaluator_python",
        sys.executable,
        "--evaluator_repo",
        str(tmp_path / "repo"),
        "--checkpoint",
        "/ckpt/videocon_physics",
        "--batch_size",
        "2",
    ]
    videophy.main(args)
    assert (script.parent / "calls.txt").read_text() == "/ckpt/videocon_physics 2\n" * 2
    result = videophy.score(read_index(eval_dir), eval_dir)  # the stale row is gone: no duplicate, no stranger
    assert result["subsets"]["overall"] == {"n": 4, "sa": 100.0, "pc": 100.0}


def test_relative_evaluator_paths_reach_the_evaluator_resolved(eval_dir, tmp_path, monkeypatch):
    """`run` starts the evaluator in its script folder: relative repo, python and checkpoint paths given from the
    working directory must reach it absolute, the python's symbolic link (a virtual environment's) kept."""
    script = write_stand_in(
        tmp_path / "repo",
        "assert os.path.isdir(a.checkpoint), a.checkpoint  # found from the script's folder",
        "open('calls.txt', 'a').write(a.checkpoint + ' ' + sys.executable + '\\n')",
    )
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    videophy.main(
        [
            "run",
            "--eval_dir",
            str(eval_dir),
            "--evaluator_python",
            "env/bin/python",
            "--evaluator_repo",
            "repo",
            "--checkpoint",
            "ckpt",
        ]
    )
    calls = (script.parent / "calls.txt").read_text().splitlines()
    assert calls == [f"{tmp_path / 'ckpt'} {tmp_path / 'env' / 'bin' / 'python'}"] * 2
    assert videophy.score(read_index(eval_dir), eval_dir)["subsets"]["overall"]["n"] == 4


def test_run_without_the_evaluator_repo_is_a_clear_error(eval_dir, tmp_path):
    with pytest.raises(EvalInputError, match="clone of https://github.com/Hritikbansal/videophy"):
        videophy.main(
            [
                "run",
                "--eval_dir",
                str(eval_dir),
                "--evaluator_python",
                sys.executable,
                "--evaluator_repo",
                str(tmp_path),
                "--checkpoint",
                "x",
            ]
        )


def test_user_mistakes_end_in_one_line_naming_the_flag(eval_dir, tmp_path):
    (tmp_path / "no_manifest").mkdir()
    utf16 = make_generation_dir(tmp_path / "utf16", VIDEOS)
    (utf16 / "manifest.csv").write_bytes((utf16 / "manifest.csv").read_text().encode("utf-16"))
    write_stand_in(tmp_path / "repo", "sys.exit('CUDA out of memory')")
    run = [
        "run",
        "--evaluator_python",
        sys.executable,
        "--evaluator_repo",
        str(tmp_path / "repo"),
        "--checkpoint",
        "c",
    ]
    mistakes = [
        (
            ["prepare", "--generation_dir", str(tmp_path / "no_manifest"), "--eval_dir", str(tmp_path / "e")],
            f"--generation_dir {tmp_path / 'no_manifest'} has no manifest.csv",
        ),
        (
            ["prepare", "--generation_dir", str(utf16), "--eval_dir", str(tmp_path / "e")],
            f"{utf16 / 'manifest.csv'}: not UTF-8 CSV text",
        ),
        (["score", "--eval_dir", str(tmp_path / "no_manifest")], f"--eval_dir {tmp_path / 'no_manifest'} has no"),
        ([*run, "--eval_dir", str(eval_dir)], "The evaluator exited with status 1"),
    ]
    for argv, start in mistakes:
        with pytest.raises(SystemExit, match=rf"^error: {re.escape(start)}[^\n]*$"):
            exit_on_user_error(lambda: videophy.main(argv))
