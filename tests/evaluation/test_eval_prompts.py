"""Prompt loading, the benchmarks' file naming and its inverse (fixtures built here; real files when present)."""

import collections
import csv
import json
from pathlib import Path

import pytest

from diffusers_tsa.eval.common import EvalInputError
from diffusers_tsa.eval.generate import plan_videos
from diffusers_tsa.eval.prompts import (
    BENCHMARKS,
    PromptEntry,
    caption_from_videophy_filename,
    load_prompts,
    parse_vbench_filename,
    read_table,
    vbench_filename,
    video_filenames,
    videophy_filename,
)


DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "eval"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark prompt files not found at {DATA}")


def _write_csv(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def videophy_files(tmp_path):
    captions = ["A ball rolls down a ramp.", "Honey drips, slowly, into tea.", "Water mixes with oil."]
    (tmp_path / "short.txt").write_text("\n".join(captions) + "\n")
    (tmp_path / "long.txt").write_text("\n".join(f"Detailed: {c}" for c in captions) + "\n")
    # One row per generator and caption, as in VideoPhy's test set.
    states = ("solid_solid", "solid_fluid", "fluid_fluid")
    rows = [(c, s, g) for g in ("lavie", "svd") for c, s in zip(captions, states)]
    labels = _write_csv(tmp_path / "reference.csv", ("caption", "states_of_matter", "source"), rows)
    return str(tmp_path / "short.txt"), str(tmp_path / "long.txt"), labels


def test_videophy_txt_with_upsampled_and_categories(videophy_files):
    short, long, labels = videophy_files
    entries = load_prompts(BENCHMARKS["videophy"], short, long, labels)
    assert [e.prompt for e in entries] == [
        "A ball rolls down a ramp.",
        "Honey drips, slowly, into tea.",
        "Water mixes with oil.",
    ]
    assert entries[1].generation_prompt == "Detailed: Honey drips, slowly, into tea."
    assert [e.category for e in entries] == ["solid_solid", "solid_fluid", "fluid_fluid"]


def test_videophy_table_rows_are_merged_per_caption(videophy_files):
    short, long, labels = videophy_files
    entries = load_prompts(BENCHMARKS["videophy"], labels, long, "none")
    assert len(entries) == 3 and entries[2].category == "fluid_fluid"


def test_videophy_needs_upsampled_prompts_unless_told(videophy_files):
    short, _, labels = videophy_files
    with pytest.raises(EvalInputError, match="--upsampled_prompts"):
        load_prompts(BENCHMARKS["videophy"], short, labels=labels)
    entries = load_prompts(BENCHMARKS["videophy"], short, labels=labels, use_upsampled=False)
    assert entries[0].generation_prompt == entries[0].prompt


def test_misaligned_upsampled_txt_is_an_error(videophy_files, tmp_path):
    short, _, _ = videophy_files
    (tmp_path / "two.txt").write_text("one\ntwo\n")
    with pytest.raises(EvalInputError, match="2 upsampled prompts but there are 3"):
        load_prompts(BENCHMARKS["videophy"], short, str(tmp_path / "two.txt"), "none")


def test_conflicting_category_is_an_error(tmp_path):
    path = _write_csv(
        tmp_path / "p.csv", ("caption", "states_of_matter"), [("A", "solid_solid"), ("A", "fluid_fluid")]
    )
    with pytest.raises(EvalInputError, match="row 2.*different category"):
        load_prompts(BENCHMARKS["videophy"], path, labels="none", use_upsampled=False)


def test_videophy2_hard_flag_from_labels(tmp_path):
    upsampled = [("A jump.", "Long A"), ("B.", "Long B")]
    prompts = _write_csv(tmp_path / "up.csv", ("caption", "upsampled_caption"), upsampled)
    hard = [("A jump.", "1"), ("B.", "0"), ("A jump.", "1")]
    labels = _write_csv(tmp_path / "test.csv", ("caption", "is_hard"), hard)
    entries = load_prompts(BENCHMARKS["videophy2"], prompts, labels=labels)
    assert [(e.generation_prompt, e.is_hard) for e in entries] == [("Long A", True), ("Long B", False)]
    unlabeled = load_prompts(BENCHMARKS["videophy2"], prompts, labels="none")
    assert [e.is_hard for e in unlabeled] == [None, None]


def test_vbench_prompt_repeated_in_one_folder_merges_dimensions_and_dense_prompts(tmp_path, caplog):
    """Subject consistency and dynamic degree are evaluated on the same videos (VBench's folder
    subject_consistency): one entry, generated from the first dense prompt."""
    info = [
        {"prompt_en": "a cat", "dimension": ["subject_consistency"]},
        {"prompt_en": "a dog", "dimension": ["color"]},
        {"prompt_en": "a cat", "dimension": ["dynamic_degree"]},
    ]
    (tmp_path / "info.json").write_text(json.dumps(info))
    dense = [
        {"id": 0, "prompt": "a cat", "dense_prompt": "a fluffy cat", "tag": "subject_consistency"},
        {"id": 1, "prompt": "a dog", "dense_prompt": "a brown dog", "tag": "color"},
        {"id": 2, "prompt": "a cat", "dense_prompt": "a sleepy cat", "tag": "dynamic_degree"},
    ]
    (tmp_path / "dense.json").write_text(json.dumps(dense))
    with caplog.at_level("WARNING", logger="eval.prompts"):
        entries = load_prompts(BENCHMARKS["vbench"], str(tmp_path / "info.json"), str(tmp_path / "dense.json"))
    assert [(e.prompt, e.generation_prompt, e.category) for e in entries] == [
        ("a cat", "a fluffy cat", "dynamic_degree;subject_consistency"),
        ("a dog", "a brown dog", "color"),
    ]
    assert "'a cat' two upsampled prompts (rows 1 and 3) for the same videos; they are generated from the first" in (
        caplog.text
    )
    plan = plan_videos(BENCHMARKS["vbench"], entries, 42, 5)
    assert [r.file for r in plan[:2]] == [
        "videos/subject_consistency/a cat-0.mp4",
        "videos/subject_consistency/a cat-1.mp4",
    ]
    assert plan[5].file == "videos/color/a dog-0.mp4"
    assert [r.seed for r in plan[:5]] == [42, 43, 44, 45, 46] and len(plan) == 10


def test_vbench_prompt_in_two_folders_gets_each_folders_dense_prompt(tmp_path, caplog):
    """NOVA's `evaluations/vbench/sample.py` generates every entry of its prompt file with its own dense prompt into
    the folder of its tag (VBench's layout, `dimension_to_folder.json`): the two prompts that VBench lists under
    appearance_style and under overall_consistency have two dense prompts and two sets of videos."""
    prompt = "The bund Shanghai, oil painting"
    info = [
        {"prompt_en": prompt, "dimension": ["appearance_style"]},
        {"prompt_en": "a dog", "dimension": ["color"]},
        {"prompt_en": prompt, "dimension": ["overall_consistency", "aesthetic_quality", "imaging_quality"]},
    ]
    (tmp_path / "info.json").write_text(json.dumps(info))
    dense = [
        {"id": 10, "prompt": prompt, "dense_prompt": "the Bund at sunset, in oils", "tag": "appearance_style"},
        {"id": 11, "prompt": "a dog", "dense_prompt": "a brown dog", "tag": "color"},
        {"id": 499, "prompt": prompt, "dense_prompt": "strollers on the Bund, in oils", "tag": "overall_consistency"},
    ]
    (tmp_path / "dense.json").write_text(json.dumps(dense))
    with caplog.at_level("WARNING", logger="eval.prompts"):
        entries = load_prompts(BENCHMARKS["vbench"], str(tmp_path / "info.json"), str(tmp_path / "dense.json"))
    assert "two upsampled prompts" not in caplog.text
    assert [(e.prompt, e.generation_prompt, e.category, e.folder) for e in entries] == [
        (prompt, "the Bund at sunset, in oils", "appearance_style", "appearance_style"),
        ("a dog", "a brown dog", "color", "color"),
        (
            prompt,
            "strollers on the Bund, in oils",
            "aesthetic_quality;imaging_quality;overall_consistency",
            "overall_consistency",
        ),
    ]
    plan = plan_videos(BENCHMARKS["vbench"], entries, 42, 5)
    files = [r.file for r in plan]
    assert len(plan) == 15 and len(set(files)) == 15
    assert files[0] == f"videos/appearance_style/{prompt}-0.mp4"
    assert files[10] == f"videos/overall_consistency/{prompt}-0.mp4"  # VBench's name, in the folder it reads
    assert plan[10].generation_prompt == "strollers on the Bund, in oils" and plan[10].seed == 42


def test_vbench_generates_from_dense_prompts_as_the_paper_does(tmp_path):
    """Table 3's protocol: NOVA's dense prompts, required unless --no_upsampling says otherwise."""
    (tmp_path / "info.json").write_text(json.dumps([{"prompt_en": "a cat", "dimension": ["color"]}]))
    with pytest.raises(EvalInputError, match=r"vbench generates from upsampled prompts.*nova_dense_prompts.json"):
        load_prompts(BENCHMARKS["vbench"], str(tmp_path / "info.json"))
    (short,) = load_prompts(BENCHMARKS["vbench"], str(tmp_path / "info.json"), use_upsampled=False)
    assert short.generation_prompt == "a cat"


def test_a_prompt_count_other_than_the_papers_is_warned_about(tmp_path, caplog):
    rows = "".join(f"a ball falls {i} times,the ball falls {i} times\n" for i in range(591))
    (tmp_path / "videophy2.csv").write_text("caption,upsampled_caption\n" + rows)
    with caplog.at_level("WARNING", logger="eval.prompts"):
        entries = load_prompts(BENCHMARKS["videophy2"], str(tmp_path / "videophy2.csv"), labels="none")
    assert len(entries) == 591
    assert "gives 591 videophy2 prompts; the paper's table has 590" in caplog.text
    caplog.clear()
    (tmp_path / "paper.csv").write_text("caption,upsampled_caption\n" + rows.split("\n", 1)[1])
    with caplog.at_level("WARNING", logger="eval.prompts"):
        assert len(load_prompts(BENCHMARKS["videophy2"], str(tmp_path / "paper.csv"), labels="none")) == 590
    assert "paper" not in caplog.text


def test_naming_and_inverse():
    assert videophy_filename("A blender spins, mixing juice.") == "A_blender_spins,_mixing_juice.mp4"
    assert caption_from_videophy_filename("A_blender_spins,_mixing_juice.mp4") == "A blender spins, mixing juice"
    assert vbench_filename("a cat-like robot", 3) == "a cat-like robot-3.mp4"
    assert parse_vbench_filename("a cat-like robot-3.mp4") == ("a cat-like robot", 3)
    with pytest.raises(EvalInputError):
        parse_vbench_filename("a cat.mp4")
    with pytest.raises(EvalInputError, match="'/'"):
        videophy_filename("AC/DC plays.")
    with pytest.raises(EvalInputError, match="255"):
        vbench_filename("x" * 260, 0)


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(EvalInputError, match="neither an existing file nor a Hub dataset"):
        load_prompts(BENCHMARKS["vbench"], str(tmp_path / "missing.json"))


def test_prompts_that_the_protocol_names_alike_get_files_of_their_own():
    """VideoPhy's naming drops the trailing period and has no index: such videos are renamed, by their prompt alone."""
    prompts = ["a red ball falls.", "a red ball falls", "..", ".", "...", "Water pours."]
    names = [row[0] for row in video_filenames(BENCHMARKS["videophy"], prompts, 1)]
    assert len(set(names)) == len(prompts)
    assert names[5] == "Water_pours.mp4"  # a name no other video wants stays the protocol's
    assert names[0].startswith("a_red_ball_falls-") and names[1].startswith("a_red_ball_falls-")
    assert all(n.startswith("-") and n.endswith(".mp4") for n in names[2:5])
    # The same prompt keeps its file whatever the order of the prompt file, so a resumed run finds it.
    reordered = [row[0] for row in video_filenames(BENCHMARKS["videophy"], prompts[::-1], 1)]
    assert dict(zip(prompts[::-1], reordered)) == dict(zip(prompts, names))
    two = video_filenames(BENCHMARKS["videophy2"], ["A cat jumps."], 2)  # --num_videos_per_prompt 2
    assert len(set(two[0])) == 2
    plan = plan_videos(BENCHMARKS["videophy"], [PromptEntry(p, p) for p in prompts], 42, 1)
    assert len({r.file for r in plan}) == len(prompts)


def test_protocol_names_that_collide_are_refused_naming_the_prompts():
    with pytest.raises(
        EvalInputError,
        match=r"--prompts: 1 file name.*'a_red_ball_falls.mp4' from "
        r"'a red ball falls.', 'a red ball falls'",
    ):
        video_filenames(BENCHMARKS["videophy"], ["a red ball falls.", "a red ball falls", "x"], 1, protocol_only=True)
    assert video_filenames(BENCHMARKS["vbench"], ["a cat-1", "a cat"], 2) == [
        ["a cat-1-0.mp4", "a cat-1-1.mp4"],
        ["a cat-0.mp4", "a cat-1.mp4"],
    ]


@pytest.mark.parametrize(
    "argument, name, content, message",
    [
        ("prompts", "missing.json", None, r"--prompts '.*missing.json' is neither an existing file nor a Hub dataset"),
        ("prompts", "p.json", b'[{"caption": ', r"--prompts .*p.json: not a readable UTF-8 .json file"),
        ("prompts", "p.txt", b"caption\n\xff\xfe ball\n", r"--prompts .*p.txt: not UTF-8 text"),
        ("upsampled", "missing.txt", None, r"--upsampled_prompts '.*missing.txt': no such file"),
        ("labels", "missing.csv", None, r"--labels '.*missing.csv' is neither an existing file"),
        ("labels", "p.csv", b"caption,is_hard\nA ball rolls down a ramp.,maybe\n", r"--labels .*p.csv, row 1: exp"),
    ],
)
def test_a_bad_prompt_file_names_its_flag(videophy_files, tmp_path, argument, name, content, message):
    short, long, labels = videophy_files
    given = {"prompts": short, "upsampled": long, "labels": labels}
    given[argument] = str(tmp_path / name)
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(EvalInputError, match=message):
        load_prompts(BENCHMARKS["videophy"], given["prompts"], given["upsampled"], given["labels"])


@needs_data
def test_real_videophy_prompts():
    d = DATA / "videophy"
    entries = load_prompts(
        BENCHMARKS["videophy"], str(d / "videophy.txt"), str(d / "videophy_detailed.txt"), str(d / "reference.csv")
    )
    assert len(entries) == 344
    counts = collections.Counter(e.category for e in entries)
    assert counts == {"solid_solid": 143, "solid_fluid": 146, "fluid_fluid": 55}
    assert all(e.generation_prompt != e.prompt for e in entries)
    assert len({videophy_filename(e.prompt) for e in entries}) == 344


@needs_data
def test_real_videophy2_prompts():
    for name, count in (("videophy2.csv", 590), ("prompt-upsampled-test.csv", 591)):
        entries = load_prompts(BENCHMARKS["videophy2"], str(DATA / "videophy2" / name), labels="none")
        assert len(entries) == count
        assert len({videophy_filename(e.prompt) for e in entries}) == count


@needs_data
def test_real_vbench_prompts():
    info = str(DATA / "vbench" / "VBench_full_info.json")
    assert len(read_table(info)) == 946
    entries = load_prompts(BENCHMARKS["vbench"], info, str(DATA / "vbench" / "nova_dense_prompts.json"))
    assert len(entries) == 946 and len({e.prompt for e in entries}) == 944  # two prompts are in two folders
    assert all(e.generation_prompt != e.prompt for e in entries)
    twice = [e for e in entries if e.prompt == "The bund Shanghai, oil painting"]
    assert [e.folder for e in twice] == ["appearance_style", "overall_consistency"]
    assert twice[0].generation_prompt != twice[1].generation_prompt  # NOVA's two dense prompts, each used
    plan = plan_videos(BENCHMARKS["vbench"], entries, 42, 5)
    assert len(plan) == 4730 and len({r.file for r in plan}) == 4730
