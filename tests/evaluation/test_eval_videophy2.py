"""VideoPhy2 with VideoPhy2-AutoEval: input file, evaluator call, strict score parsing and Table 2 metrics."""

import csv
import re
import sys

import pytest

from diffusers_tsa.eval import videophy2
from diffusers_tsa.eval.common import EvaluatorOutputError, VideoRecord, exit_on_user_error, write_manifest
from diffusers_tsa.eval.physics import read_index


# (caption, is_hard, SA, PC)
VIDEOS = [
    ("A man juggles three balls.", True, 5, 4),
    ("A dog catches a frisbee, mid-air.", True, 4, 2),
    ("Two cars collide.", False, 3, 5),
    ("A chef flips a pancake.", False, 0, 4),  # 0: the evaluator could not parse its SA answer
]


@pytest.fixture
def eval_dir(tmp_path):
    gen = tmp_path / "gen"
    records = [VideoRecord(c, c, f"videos/{i}.mp4", 42, "", hard) for i, (c, hard, *_) in enumerate(VIDEOS)]
    (gen / "videos").mkdir(parents=True)
    for r in records:
        (gen / r.file).write_bytes(b"video")
    write_manifest(records, gen / "manifest.csv")
    out = tmp_path / "eval"
    videophy2.main(["prepare", "--generation_dir", str(gen), "--eval_dir", str(out)])
    return out


def write_output(eval_dir, task, scores, fmt="{:.1f}"):
    """An output as VIDEOPHY2/inference.py writes it: pandas to_csv with its index, the input columns and score."""
    path = eval_dir / videophy2.OUTPUTS[task]
    with (eval_dir / "input.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "caption", "videopath", "score"])
        for i, (row, s) in reversed(list(enumerate(zip(rows, scores)))):
            writer.writerow([i, row["caption"], row["videopath"], fmt.format(s) if isinstance(s, (int, float)) else s])
    return path


def test_prepare_writes_caption_and_videopath(eval_dir):
    with (eval_dir / "input.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["caption", "videopath"]
    assert rows[2][0] == "A dog catches a frisbee, mid-air." and rows[2][1].endswith("videos/1.mp4")


def test_score_against_hand_computed_values(eval_dir, capsys):
    write_output(eval_dir, "sa", [v[2] for v in VIDEOS])
    write_output(eval_dir, "pc", [v[3] for v in VIDEOS])
    videophy2.main(["score", "--eval_dir", str(eval_dir), "--method", "tiny"])
    result = videophy2.score(read_index(eval_dir), eval_dir)
    # SA >= 4: videos 0, 1; PC >= 4: videos 0, 2, 3; both: video 0. Means: SA 12/4, PC 15/4.
    assert result["subsets"]["all"] == {"n": 4, "joint": 25.0, "sa": 50.0, "pc": 75.0, "sa_mean": 3.0, "pc_mean": 3.75}
    assert result["subsets"]["hard"] == {
        "n": 2,
        "joint": 50.0,
        "sa": 100.0,
        "pc": 50.0,
        "sa_mean": 4.5,
        "pc_mean": 3.0,
    }
    assert result["unparsed"] == {"sa": 1, "pc": 0}
    out = capsys.readouterr().out
    assert "| Method | Joint | SA | PC | Hard Joint | Hard SA | Hard PC |" in out
    assert "| tiny | 25.0 | 50.0 | 75.0 | 50.0 | 100.0 | 50.0 |" in out


def test_no_hard_subset_when_unmarked(tmp_path):
    from diffusers_tsa.eval.physics import IndexedVideo

    videos = [IndexedVideo(f"/v/{i}.mp4", "p", "", None) for i in range(2)]
    result = videophy2.metrics(videos, {"/v/0.mp4": 4, "/v/1.mp4": 1}, {"/v/0.mp4": 4, "/v/1.mp4": 4})
    assert set(result["subsets"]) == {"all"} and result["subsets"]["all"]["joint"] == 50.0


@pytest.mark.parametrize(
    "scores, message",
    [
        ([5, 4, "4.5", 1], r"line \d+: AutoEval scores are integers 0-5, got '4.5'"),
        ([5, 4, 7, 1], r"line \d+: expected a score in \[0, 5\]"),
        ([5, 4, "", 1], r"line \d+: expected a score"),
        ([5, 4, "four", 1], "got 'four'"),
    ],
)
def test_malformed_scores_name_the_line(eval_dir, scores, message):
    path = write_output(eval_dir, "sa", scores)
    with pytest.raises(EvaluatorOutputError, match=message):
        videophy2.read_output(path, read_index(eval_dir))


def test_malformed_header_and_rows(eval_dir):
    path = eval_dir / "output_sa.csv"
    path.write_text(",caption,video,score\n0,a,b,4.0\n")
    with pytest.raises(Exception, match="line 1: header .* lacks the column.*videopath"):
        videophy2.read_output(path, read_index(eval_dir))
    path.write_text(",caption,videopath,score\n0,a,4.0\n")
    with pytest.raises(EvaluatorOutputError, match="line 2: expected 4 fields"):
        videophy2.read_output(path, read_index(eval_dir))


def test_run_calls_both_tasks(eval_dir, tmp_path):
    script = tmp_path / "repo" / videophy2.SCRIPT
    script.parent.mkdir(parents=True)
    script.write_text(
        "import argparse, csv, os\n"
        "p = argparse.ArgumentParser()\n"
        "[p.add_argument(a) for a in ('--input_csv', '--output_csv', '--checkpoint', '--task', '--num_frames')]\n"
        "a = p.parse_args()\n"
        "rows = list(csv.DictReader(open(a.input_csv, newline='')))\n"
        "with open(a.output_csv, 'w', newline='') as f:\n"
        "    w = csv.writer(f); w.writerow(['', 'caption', 'videopath', 'score'])\n"
        "    s = 5.0 if a.task == 'sa' else 3.0\n"
        "    w.writerows([(i, r['caption'], r['videopath'], s) for i, r in enumerate(rows)])\n"
        "open('tasks.txt', 'a').write(a.task + ' ' + a.num_frames + '\\n')\n"
    )
    videophy2.main(
        [
            "run",
            "--eval_dir",
            str(eval_dir),
            "--evaluator_python",
            sys.executable,
            "--evaluator_repo",
            str(tmp_path / "repo"),
            "--checkpoint",
            "/ckpt/videophy_2_auto",
        ]
    )
    assert (script.parent / "tasks.txt").read_text() == "sa 32\npc 32\n"
    result = videophy2.score(read_index(eval_dir), eval_dir)
    assert result["subsets"]["all"]["sa"] == 100.0 and result["subsets"]["all"]["joint"] == 0.0


def test_user_mistakes_end_in_one_line_naming_the_flag(eval_dir, tmp_path):
    script = tmp_path / "repo" / videophy2.SCRIPT
    script.parent.mkdir(parents=True)
    script.write_text("raise SystemExit(2)\n")  # as the evaluator does on a bad checkpoint
    mistakes = [
        (["score", "--eval_dir", str(tmp_path)], f"--eval_dir {tmp_path} has no videos.csv"),
        (
            [
                "run",
                "--eval_dir",
                str(eval_dir),
                "--evaluator_python",
                sys.executable,
                "--evaluator_repo",
                str(tmp_path / "repo"),
                "--checkpoint",
                "c",
            ],
            "The evaluator exited with status 2",
        ),
    ]
    for argv, start in mistakes:
        with pytest.raises(SystemExit, match=rf"^error: {re.escape(start)}[^\n]*$"):
            exit_on_user_error(lambda: videophy2.main(argv))
