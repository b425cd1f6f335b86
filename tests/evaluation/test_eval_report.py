"""Several runs side by side in the layout of the paper's Tables 1-3."""

import csv
import json

import pytest

from diffusers_tsa.eval import report
from diffusers_tsa.eval.common import EvalInputError, exit_on_user_error


def _dump(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_tables_for_two_runs(tmp_path, capsys):
    phy = {
        "benchmark": "videophy",
        "subsets": {"overall": {"n": 4, "sa": 59.9, "pc": 25.0}, "solid_solid": {"n": 2, "sa": 44.8, "pc": 15.4}},
    }
    phy2 = {"benchmark": "videophy2", "subsets": {"all": {"joint": 22.4, "sa": 27.1, "pc": 65.9}}}
    vb = {
        "benchmark": "vbench",
        "total": 81.0,
        "quality": 81.4,
        "semantic": 79.4,
        "dimensions": {"subject_consistency": 93.4, "multiple_objects": 71.6},
    }
    mtsa = {"benchmark": "videophy", "subsets": {"overall": {"n": 4, "sa": 64.5, "pc": 30.8}}}
    report.main(
        [
            "--run",
            "CogVideoX-2B*",
            _dump(tmp_path / "a.json", phy),
            _dump(tmp_path / "b.json", phy2),
            _dump(tmp_path / "c.json", vb),
            "--run",
            "+ M-TSA",
            _dump(tmp_path / "d.json", mtsa),
            "--output_dir",
            str(tmp_path / "tables"),
        ]
    )
    out = capsys.readouterr().out
    assert "| CogVideoX-2B* | 59.9 | 25.0 | 44.8 | 15.4 | - | - | - | - |" in out
    assert "| + M-TSA | 64.5 | 30.8 | - | - | - | - | - | - |" in out
    table2 = (
        "| Method | Joint | SA | PC |\n|---|---|---|---|\n"
        "| CogVideoX-2B* | 22.4 | 27.1 | 65.9 |\n| + M-TSA | - | - | - |"
    )
    assert table2 in out
    assert "| Method | Total Score | Quality Score | Subject Consist. |" in out
    assert "| CogVideoX-2B* | 79.4 | 71.6 | - |" in out  # Table 3 (b): Semantic, Multiple Objects, Human Action
    with (tmp_path / "tables" / "table1_videophy.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["Method", "Overall SA", "Overall PC"] and rows[2][:3] == ["+ M-TSA", "64.5", "30.8"]
    assert {p.name for p in (tmp_path / "tables").iterdir()} == {
        "table1_videophy.md",
        "table1_videophy.csv",
        "table2_videophy2.md",
        "table2_videophy2.csv",
        "table3_vbench.md",
        "table3a_vbench.csv",
        "table3b_vbench.csv",
    }


def test_rejects_foreign_json_and_duplicates(tmp_path):
    bad = _dump(tmp_path / "x.json", {"foo": 1})
    with pytest.raises(EvalInputError, match="not a scores JSON"):
        report.build_report([("a", [bad])])
    good = _dump(tmp_path / "y.json", {"benchmark": "videophy2", "subsets": {}})
    with pytest.raises(EvalInputError, match="two videophy2 results"):
        report.build_report([("a", [good, good])])


def test_printed_scores_have_the_tables_precision_and_the_csv_keeps_all(tmp_path, capsys):
    phy2 = {"benchmark": "videophy2", "subsets": {"all": {"joint": 0.1 + 0.2, "sa": 60, "pc": 200 / 3}}}
    report.main(["--run", "a", _dump(tmp_path / "a.json", phy2), "--output_dir", str(tmp_path / "tables")])
    assert "| a | 0.3 | 60.0 | 66.7 |" in capsys.readouterr().out
    with (tmp_path / "tables" / "table2_videophy2.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert [float(v) for v in rows[1][1:]] == [0.1 + 0.2, 60, 200 / 3]


def test_unreadable_scores_end_in_one_line_naming_the_run(tmp_path):
    (tmp_path / "broken.json").write_text('{"benchmark": "videophy"')
    for path, problem in ((tmp_path / "missing.json", "no such file"), (tmp_path / "broken.json", "not JSON")):
        with pytest.raises(SystemExit, match=rf"^error: --run 'a': [^\n]*{problem}[^\n]*scores.json[^\n]*$"):
            exit_on_user_error(lambda: report.main(["--run", "a", str(path)]))
    with pytest.raises(SystemExit) as err:
        exit_on_user_error(lambda: report.main(["--run", "a", str(tmp_path / "missing.json")]))
    # Each command named writes there: `eval.vbench run` has --output_dir only, its `aggregate` has --output_json.
    assert "`eval.vbench run` writes (OUTPUT_DIR/scores.json)" in str(err.value)
    assert "`eval.vbench aggregate --output_json`" in str(err.value) and "run|aggregate" not in str(err.value)
