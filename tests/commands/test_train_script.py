"""train_text_to_video_tsa.py end to end on tiny offline models, launched with `accelerate launch` on the CPU."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXPipeline
from safetensors.torch import load_file

from diffusers_tsa import TeacherFeatures, TeacherInput, load_teacher
from diffusers_tsa.cli import FlagError, flag_errors
from diffusers_tsa.data import ClipSpec, load_video_dataset
from diffusers_tsa.testing import (
    tiny_cogvideox_components,
    tiny_dinov2,
    tiny_videomae,
    write_test_clip,
    write_test_dataset,
)
from diffusers_tsa.training import plan_training, read_agreement


SCRIPT = Path(__file__).resolve().parents[2] / "train_text_to_video_tsa.py"
PROJECTOR = Path("alignment_projector") / "diffusion_pytorch_model.safetensors"
PROMPT = "a white square moves right"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny CogVideoX pipeline, a tiny VideoMAE teacher, a tiny DINOv2 (image) teacher and four 12-frame clips,
    saved to disk."""
    root = tmp_path_factory.mktemp("tiny")
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(root / "base")
    tiny_videomae().save_pretrained(root / "teacher")
    tiny_dinov2(num_register_tokens=2).save_pretrained(root / "image_teacher")
    write_test_dataset(root / "data", num_clips=4, caption=PROMPT)
    return root


def common_flags(tiny, output_dir):
    return [
        "--pretrained_model_name_or_path",
        str(tiny / "base"),
        "--instance_data_root",
        str(tiny / "data"),
        "--caption_column",
        "prompts.txt",
        "--video_column",
        "videos.txt",
        "--teacher_model_name_or_path",
        str(tiny / "teacher"),
        "--height",
        "96",
        "--width",
        "144",
        "--max_num_frames",
        "9",
        "--alignment_depth",
        "1",
        "--train_batch_size",
        "2",
        "--rank",
        "4",
        "--lora_alpha",
        "4",
        "--projector_hidden_dim",
        "16",
        "--seed",
        "0",
        "--report_to",
        "none",
        "--lr_warmup_steps",
        "0",
        "--checkpointing_steps",
        "100",
        "--output_dir",
        str(output_dir),
    ]


def free_port():
    """A TCP port nothing listens on now, for one multi-process launch's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch(processes=1, threads=None):
    """`accelerate launch` on the CPU with `processes` processes, before the script and its flags.

    One process runs with `--cpu`; several with `--multi_gpu` (accelerate's `--cpu` launcher runs one process
    whatever `--num_processes` says), gloo on a machine without GPUs, and a rendezvous port of their own: tests
    that run side by side under pytest-xdist must not meet on accelerate's default 29500."""
    distributed = ("--multi_gpu", "--main_process_port", str(free_port())) if processes > 1 else ("--cpu",)
    threads = threads or max(1, (os.cpu_count() or 2) // processes)
    return [
        *(sys.executable, "-m", "accelerate.commands.launch", *distributed, "--num_processes", str(processes)),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
        *("--num_cpu_threads_per_process", str(threads)),
    ]


def launch_command(tiny, output_dir, *flags, processes=1, script=(SCRIPT,), common=True):
    """`accelerate launch` of `script` with the common flags (unless `common` is off) and `flags`."""
    return [
        *accelerate_launch(processes),
        *map(str, script),
        *(common_flags(tiny, output_dir) if common else []),
        *flags,
    ]


def offline_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_script(tiny, output_dir, *flags, processes=1, expect_success=True, script=(SCRIPT,), env=None):
    env = {**offline_env(), **(env or {})}
    if processes > 1:
        env["CUDA_VISIBLE_DEVICES"] = ""  # several processes share no GPU here: gloo on the CPU, even beside one GPU
    result = subprocess.run(
        launch_command(tiny, output_dir, *flags, processes=processes, script=script),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    log = result.stdout + result.stderr
    if expect_success:
        assert result.returncode == 0, log[-4000:]
    return result.returncode, log


def checkpoints(output_dir):
    return {p.name for p in Path(output_dir).iterdir() if p.name.startswith("checkpoint-")}


def logged_scalars(output_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = [
        p
        for p in (Path(output_dir) / "logs").rglob("events.out.tfevents.*")
        if p.parent.name != "logs" and EventAccumulator(str(p)).Reload().Tags()["scalars"]
    ]
    accumulator = EventAccumulator(str(events)).Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_a_lora_run_logs_every_step_and_writes_its_weights_and_card(tiny, tmp_path):
    pytest.importorskip("tensorboard", reason="the logged scalars are read from tensorboard's event files")
    out = tmp_path / "out"
    _, log = run_script(
        tiny,
        out,
        "--max_train_steps",
        "3",
        "--learning_rate",
        "1e-2",
        "--validation_prompt",
        PROMPT,
        "--validation_num_inference_steps",
        "2",
        "--train_batch_size",
        "1",
        "--gradient_accumulation_steps",
        "2",
        "--lr_scheduler",
        "linear",
        "--report_to",
        "tensorboard",
        "--alignment_weight",
        "0.7",
    )
    assert "Total train batch size (w. parallel, distributed & accumulation) = 2" in log
    for warning in ("FutureWarning", "DeprecationWarning", "RuntimeWarning", "should be kept in float32"):
        assert warning not in log  # a clean run warns of nothing
    # ... and repeats nothing: no line per model load, one line per validation (the final one says it is final).
    assert "values were not passed" not in log and "All the weights of" not in log
    assert "Running validation" not in log and log.count("Final validation, the saved weights in a stock") == 1
    scalars = logged_scalars(out)
    for tag in ("loss/diffusion", "loss/alignment", "loss/total", "grad_norm", "step_time", "data/skipped_clips"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3], tag
    assert scalars["loss"] == scalars["loss/total"]  # diffusers' examples' key, beside the terms
    # Eq. 14 with the given weight, step by step: total = diffusion + 0.7 * alignment, the alignment term non-zero.
    steps = zip(*(scalars[f"loss/{term}"] for term in ("total", "diffusion", "alignment")))
    for (_, total), (_, diffusion), (_, align) in steps:
        assert align > 0 and total == pytest.approx(diffusion + 0.7 * align, rel=1e-5)
    # One scheduler step per optimizer step (not per micro-batch): linear decay over 3 steps from 1e-2.
    assert [value for _, value in scalars["lr"]] == pytest.approx([1e-2 * 2 / 3, 1e-2 / 3, 0.0], abs=1e-9)
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / PROJECTOR).is_file()
    assert (out / "validation" / "final-0-0.mp4").is_file()
    assert f"Final weights, model card and validation videos are in {out}" in log
    assert not any(k.startswith("transformer") for k in load_file(out / PROJECTOR))
    assert not any("mlp" in k or "resample" in k for k in load_file(out / "pytorch_lora_weights.safetensors"))
    # A stock pipeline's reload of the LoRA: test_family_contract.py.

    card = (out / "README.md").read_text()
    transformer_config = tiny / "base" / "transformer" / "config.json"
    for expected in (
        "- cogvideox",
        "- lora",
        "- tsa",
        "- text-to-video",
        "`tsa_temperature` | `0.1`",
        "load_lora_weights",
        "| `mixed_precision` | `no` |",  # accelerate's, the flag not given
        f"| `max_sequence_length` | `{json.loads(transformer_config.read_text())['max_text_seq_length']}` |",
        f"| `projector_learning_rate` | `{1e-2}` |",  # --learning_rate's, the flag not given
    ):
        assert expected in card
    assert "hub_token" not in (out / "training_config.json").read_text().replace('"hub_token"', "")


@pytest.mark.parametrize(
    "loss, teacher",
    [
        ("m-tsa", "image_teacher"),
        ("tsa", "image_teacher"),
        ("trd", "image_teacher"),
        ("repa", "image_teacher"),
        ("crepa", "image_teacher"),
        ("crepa", "teacher"),
        ("none", "teacher"),
    ],
)
def test_every_alignment_loss_trains(tiny, tmp_path, loss, teacher):
    """Every loss with the image teacher (DINOv2 frame by frame: 8 frames at 28x42, a 8 x 2 x 3 grid, to which the
    projector brings the student's 2 latent frames after the first, 6 x 9 tokens each); CREPA with the video teacher
    too (the other losses train with it everywhere else)."""
    out = tmp_path / "out"
    _, log = run_script(
        tiny,
        out,
        "--alignment_loss",
        loss,
        "--teacher_model_name_or_path",
        str(tiny / teacher),
        "--max_train_steps",
        "2",
        "--checkpointing_steps",
        "1",
        "--crepa_adjacent_distance",
        "2",
    )
    assert f"Alignment = {loss}" in log
    if loss == "none":
        assert not (out / PROJECTOR).exists()
        return
    first, second = (load_file(out / f"checkpoint-{s}" / PROJECTOR) for s in (1, 2))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # the alignment loss trains the projector
    grid = "(8, 2, 3)" if teacher == "image_teacher" else "(4, 2, 3)"
    assert f"-> teacher grid {grid}" in log
    assert ("`crepa_adjacent_distance` | `2`" in (out / "README.md").read_text()) == (loss == "crepa")


def test_checkpoint_limit_and_resume_follow_diffusers_semantics(tiny, tmp_path):
    out = tmp_path / "out"
    run_script(tiny, out, "--max_train_steps", "6", "--checkpointing_steps", "2", "--checkpoints_total_limit", "2")
    assert checkpoints(out) == {"checkpoint-4", "checkpoint-6"}
    _, log = run_script(
        tiny,
        out,
        "--max_train_steps",
        "8",
        "--checkpointing_steps",
        "2",
        "--checkpoints_total_limit",
        "2",
        "--resume_from_checkpoint",
        "checkpoint-4",
    )
    assert "Resuming from checkpoint" in log
    assert checkpoints(out) == {"checkpoint-6", "checkpoint-8"}


def test_sigkill_then_resume_from_latest(tiny, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        launch_command(tiny, out, "--max_train_steps", "40", "--checkpointing_steps", "1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=offline_env(),
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (out / "checkpoint-2").is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (out / "checkpoint-2").is_dir() and not (out / "pytorch_lora_weights.safetensors").exists()
    killed_at = max(int(name.split("-")[1]) for name in checkpoints(out) if name.split("-")[1].isdigit())

    _, log = run_script(
        tiny,
        out,
        "--max_train_steps",
        str(killed_at + 2),
        "--resume_from_checkpoint",
        "latest",
        "--checkpointing_steps",
        "1",
    )
    assert f"Resuming from checkpoint {out / f'checkpoint-{killed_at}'}" in log
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert f"checkpoint-{killed_at + 2}" in checkpoints(out)


def test_precomputed_teacher_features_train(tiny, tmp_path):
    """Image-teacher features (DINOv2, tubelet 1 x 14 x 14) precomputed, then trained on with no teacher loaded."""
    clip = ClipSpec(height=96, width=144, max_num_frames=9)
    input = TeacherInput.for_clip(clip.num_frames, clip.height, clip.width, patch_size=14, tubelet_size=1)
    teacher = load_teacher(tiny / "image_teacher", input)
    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    TeacherFeatures(teacher, clip).map(table, batch_size=2).save_to_disk(tmp_path / "precomputed")

    out = tmp_path / "out"
    flags = common_flags(tiny, out)
    i = flags.index("--teacher_model_name_or_path")
    del flags[i : i + 2]  # no teacher at all: everything comes from the dataset
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *flags,
            "--dataset_name",
            str(tmp_path / "precomputed"),
            "--caption_column",
            "caption",
            "--video_column",
            "video",
            "--max_train_steps",
            "2",
        ],
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "-> teacher grid (8, 2, 3) (precomputed teacher)" in result.stderr
    assert (out / PROJECTOR).is_file()
    # The card names the teacher recorded with the features, and the settings they were made with.
    card = (out / "README.md").read_text()
    assert f"| `teacher_model_name_or_path` | `{teacher.name}` |" in card and "`teacher_features_column`" in card
    assert '"max_num_frames": 9' in card.split("| `precomputed_clip` |")[1].split("\n")[0]
    assert "| `precomputed_storage_dtype` | `float16` |" in card


def test_a_corrupt_clip_is_skipped_and_counted_and_an_empty_caption_trains(tiny, tmp_path):
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    write_test_clip(data / "clips" / "good.mp4")
    (data / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (data / "metadata.csv").write_text(f"text,video\n{PROMPT},clips/broken.mp4\n,clips/good.mp4\n")
    out = tmp_path / "out"
    _, log = run_script(
        tiny,
        out,
        "--dataset_name",
        str(data / "metadata.csv"),
        "--instance_data_root",
        str(data),
        "--caption_column",
        "text",
        "--video_column",
        "video",
        "--max_train_steps",
        "2",
    )
    assert '1 of 2 captions are empty: they train as ""' in log
    broken = data / "clips" / "broken.mp4"
    assert log.count(f"Skipping unreadable clip {broken}: ") == 1  # warned once, 2 epochs
    assert "cannot decode it" in log
    assert f"1 unreadable clip(s) were skipped during training: {broken}" in log
    assert (out / "pytorch_lora_weights.safetensors").is_file()


def test_a_non_finite_loss_is_reported_and_skipped(tiny, tmp_path):
    teacher = tiny_videomae()
    with torch.no_grad():
        teacher.encoder.layer[0].attention.output.dense.weight.fill_(float("nan"))  # a broken teacher checkpoint
    teacher.save_pretrained(tmp_path / "nan-teacher")
    out = tmp_path / "out"
    _, log = run_script(
        tiny, out, "--max_train_steps", "2", "--teacher_model_name_or_path", str(tmp_path / "nan-teacher")
    )
    assert "Step 1: non-finite loss/alignment" in log and "skipping this batch" in log
    lora = load_file(out / "pytorch_lora_weights.safetensors")
    assert all(torch.isfinite(v).all() for v in lora.values())
    assert all(not v.any() for k, v in lora.items() if "lora_B" in k)  # nothing was trained through the NaN


def test_two_processes_end_with_identical_weights_and_write_once(tiny, tmp_path):
    out, sums = tmp_path / "out", tmp_path / "checksums"
    sums.mkdir()
    _, log = run_script(
        tiny,
        out,
        "--max_train_steps",
        "2",
        "--checkpointing_steps",
        "2",
        processes=2,
        script=(Path(__file__).with_name("launch_with_checksums.py"), SCRIPT),
        env={"CHECKSUM_DIR": str(sums)},
    )
    assert sorted(p.name for p in sums.iterdir()) == ["0.txt", "1.txt"]
    assert (sums / "0.txt").read_text() == (sums / "1.txt").read_text()
    assert {p.name for p in (out / "checkpoint-2").glob("random_states_*.pkl")} == {
        "random_states_0.pkl",
        "random_states_1.pkl",
    }
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in log
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "README.md").is_file()


# --- Flag checks: refused before any weight is loaded ------------------------------------------------------------


def parse_script_args(flags):
    """The training script's `parse_args`."""
    from diffusers_tsa.train_text_to_video_tsa import parse_args

    return parse_args(flags)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--alignment_depth", "3"], r"--alignment_depth=3 is out of range .* \[1, 2\]"),
        (["--teacher_height", "40"], r"--teacher_height=40 is not a multiple of the patch 16 \(use 32 or 48\)"),
        (["--height", "100"], r"--height=100 must be a multiple of 16"),
        (["--teacher_features_column", "vmae"], r"--teacher_features_column 'vmae' is not a column"),
        (["--tsa_mask_ratio", "0"], r"--tsa_mask_ratio=0.0 must be in \(0, 1\]"),
        (["--teacher_num_frames", "6"], r"2 latent frames after the first: --teacher_num_frames 4 or 8 pairs"),
        (
            ["--pretrained_model_name_or_path", "./cogvideox-2b"],
            r"--pretrained_model_name_or_path='./cogvideox-2b' looks like a local path, but nothing exists there",
        ),
        (
            ["--teacher_model_name_or_path", "models/teachers/vmae2"],
            r"--teacher_model_name_or_path='models/teachers/vmae2' looks like a local path, but nothing exists",
        ),
        (["--dataset_name", "clips.csv"], r"--dataset_name='clips.csv' looks like a local path, but nothing exists"),
        (["--instance_data_root", "no_such_dir"], r"--instance_data_root='no_such_dir' is not a folder"),
        (["--max_num_frames", "49"], r"None of the 4 clips can be read, e.g. .*fewer than the 49 required"),
        (
            ["--alignment_loss", "crepa", "--crepa_adjacent_distance", "-1"],
            r"--crepa_adjacent_distance=-1 must be >= 0",
        ),
        (
            ["--teacher_model_name_or_path", "tiny:image_teacher", "--teacher_height", "30"],
            r"--teacher_height=30 is not a multiple of the patch 14 \(use 28 or 42\)",
        ),
        (["--validation_video", "held-out.mp4"], r"--validation_video 'held-out.mp4' is not a file"),
        (
            ["--alignment_loss", "none", "--validation_video", "tiny:data/clips/3.mp4"],
            r"--validation_video measures the alignment with the teacher online, and this run has no alignment term",
        ),
    ],
)
def test_flag_errors_name_the_flag(tiny, tmp_path, flags, message):
    flags = [str(tiny / flag[5:]) if flag.startswith("tiny:") else flag for flag in flags]
    args = parse_script_args([*common_flags(tiny, tmp_path / "out"), *flags])
    with pytest.raises(FlagError, match=message), flag_errors():
        plan_training(args)


def test_a_teacher_size_with_no_integer_ratio_takes_the_projectors_general_path(tiny, tmp_path):
    from diffusers_tsa import GridResampling

    plan = plan_training(parse_script_args([*common_flags(tiny, tmp_path / "out"), "--teacher_width", "32"]))
    config = plan.alignment
    assert (config.student_grid, config.teacher_grid) == ((3, 6, 9), (4, 2, 2))  # 9 tokens across, 2 in the teacher
    assert GridResampling.between(config.student_grid, config.teacher_grid, config.drop_first_frame).resize == (
        4,
        6,
        8,
    )


def test_teacher_settings_must_match_precomputed_features(tiny, tmp_path):
    clip = ClipSpec(height=96, width=144, max_num_frames=9)
    teacher = load_teacher(tiny / "teacher", TeacherInput.for_clip(clip.num_frames, clip.height, clip.width))
    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    TeacherFeatures(teacher, clip).map(table.select([0]), batch_size=1).save_to_disk(tmp_path / "pre")
    args = parse_script_args(
        [
            *common_flags(tiny, tmp_path / "out"),
            "--dataset_name",
            str(tmp_path / "pre"),
            "--caption_column",
            "caption",
            "--video_column",
            "video",
            "--teacher_height",
            "64",
        ]
    )
    with pytest.raises(FlagError, match=r"features on a \(4, 2, 3\) grid .* gives \(4, 4, 3\)"), flag_errors():
        plan_training(args)


def test_a_bad_flag_exits_before_loading_any_weight(tiny, tmp_path):
    code, log = run_script(tiny, tmp_path / "out", "--alignment_depth", "7", expect_success=False)
    assert code == 1 and "error: --alignment_depth=7 is out of range" in log
    assert "Running training" not in log and "Loading" not in log
    code, log = run_script(tiny, tmp_path / "out", "--alignment_loss", "l2", expect_success=False)
    assert code != 0 and "--alignment_loss: invalid choice: 'l2'" in log


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A 2-step LoRA run with a checkpoint at every step, copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("trained") / "out"
    run_script(tiny, out, "--max_train_steps", "2", "--checkpointing_steps", "1")
    return out


@pytest.mark.parametrize("damage", ["no LoRA file", "empty projector", "another run's LoRA"])
def test_resume_refuses_an_incomplete_checkpoint(tiny, trained, tmp_path, damage):
    import shutil

    from safetensors.torch import save_file

    out = tmp_path / "out"
    shutil.copytree(trained, out)
    checkpoint = out / "checkpoint-2"
    if damage == "no LoRA file":
        (checkpoint / "pytorch_lora_weights.safetensors").unlink()
        message = f"error: --resume_from_checkpoint='{checkpoint}' cannot resume this run: pytorch_lora_weights"
    elif damage == "empty projector":
        (checkpoint / PROJECTOR).write_bytes(b"")
        message = f"cannot resume this run: {PROJECTOR} missing or empty"
    else:
        other_run = {"transformer.proj_out.lora_A.weight": torch.zeros(4, 4)}
        save_file(other_run, checkpoint / "pytorch_lora_weights.safetensors")
        message = "does not hold this run's LoRA"
    code, log = run_script(
        tiny,
        out,
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "1",
        "--resume_from_checkpoint",
        "latest",
        expect_success=False,
    )
    assert code == 1 and message in log
    frames = [line for line in log.splitlines() if line.strip().startswith('File "')]
    assert not [f for f in frames if "diffusers_tsa" in f or SCRIPT.name in f]  # only the launcher's traceback
    assert not (out / "checkpoint-3").exists()  # nothing was trained on a fresh adapter


def test_a_hub_token_on_the_command_line_is_refused(tiny, tmp_path):
    with pytest.raises(FlagError, match=r"--hub_token is not accepted.*`hf auth login`.*HF_TOKEN") as err:
        parse_script_args([*common_flags(tiny, tmp_path / "out"), "--hub_token", "hf_secret"])
    assert "hf_secret" not in str(err.value)


def test_a_second_run_into_the_same_folder_is_refused(tiny, tmp_path):
    from diffusers_tsa.training import OutputDirLock

    out = tmp_path / "out"
    held = OutputDirLock(out).acquire()  # another run, here this process
    try:
        code, log = run_script(tiny, out, "--max_train_steps", "1", expect_success=False)
    finally:
        held.release()
    assert code == 1
    assert f"error: --output_dir='{out}' is in use by another training run (process {os.getpid()} on" in log
    assert "Running training" not in log and not list(out.glob("checkpoint-*"))
    _, log = run_script(tiny, out, "--max_train_steps", "1")  # free again once released
    assert f"Final weights and model card are in {out}" in log  # no validation ran: none is announced
    assert not (out / ".training.lock").exists()  # a finished run leaves no lock behind


def test_mixed_precision_keeps_the_teacher_and_a_full_fine_tune_in_fp32(tiny, tmp_path):
    """bf16 autocast on the CPU: the teacher runs in fp32 (`--teacher_dtype` default), and a full fine-tune starts
    from the checkpoint's own fp16 weights exactly, not from a bf16 copy of them (lr 0: checkpoint-1 holds them)."""
    base = tmp_path / "fp16-base"
    pipe = CogVideoXPipeline.from_pretrained(tiny / "base")
    pipe.transformer.half()
    pipe.save_pretrained(base)
    out = tmp_path / "out"
    _, log = run_script(
        tiny,
        out,
        "--pretrained_model_name_or_path",
        str(base),
        "--mixed_precision",
        "bf16",
        "--training_mode",
        "full",
        "--learning_rate",
        "0",
        "--adam_weight_decay",
        "0",
        "--max_train_steps",
        "1",
        "--checkpointing_steps",
        "1",
    )
    assert "(online teacher in float32)" in log
    trained = load_file(out / "checkpoint-1" / "transformer" / "diffusion_pytorch_model.safetensors")
    original = load_file(base / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(trained[k].dtype == torch.float32 and torch.equal(trained[k], v.float()) for k, v in original.items())


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast is refused on the CPU only")
def test_fp16_on_the_cpu_is_refused_before_loading(tiny, tmp_path):
    code, log = run_script(
        tiny, tmp_path / "out", "--mixed_precision", "fp16", "--max_train_steps", "1", expect_success=False
    )
    assert code == 1 and "error: --mixed_precision fp16 needs a GPU" in log and "Running training" not in log


# --- Precomputed features: the settings travel with the data ------------------------------------------------------


def plain_map(tiny, folder, *, clip=ClipSpec(height=96, width=144, max_num_frames=9), mask_ratio=0.2):
    """Features made the plainest way: `dataset.map(TeacherFeatures(...), batched=True)` then `save_to_disk`."""
    teacher = load_teacher(tiny / "teacher", TeacherInput.for_clip(clip.num_frames, clip.height, clip.width))
    table = load_video_dataset(
        instance_data_root=tiny / "data", caption_column="prompts.txt", video_column="videos.txt"
    )
    mapped = table.map(TeacherFeatures(teacher, clip, mask_ratio=mask_ratio), batched=True, batch_size=2)
    mapped.save_to_disk(folder)
    return mapped


def precomputed_flags(tiny, folder, output_dir, *flags):
    """The common flags on a precomputed dataset, with no teacher."""
    common = common_flags(tiny, output_dir)
    i = common.index("--teacher_model_name_or_path")
    return [*common[:i], *common[i + 2 :], "--dataset_name", str(folder), *flags]


def test_a_plain_dataset_map_of_teacher_features_trains_on_its_stored_values(tiny, tmp_path):
    from diffusers_tsa.training import TrainingClips

    mapped = plain_map(tiny, tmp_path / "pre")
    plan = plan_training(parse_script_args(precomputed_flags(tiny, tmp_path / "pre", tmp_path / "out")))
    assert plan.alignment.teacher_grid == (4, 2, 3) and plan.alignment.teacher_width == 32
    example = TrainingClips(plan.table, plan.clip, features_column="teacher_features")[1]
    stored = torch.tensor(mapped[1]["teacher_features"], dtype=torch.float16)
    assert example["teacher_features"].dtype == torch.float16  # 2 bytes a value up to the device
    assert torch.equal(example["teacher_features"], stored)
    assert torch.equal(example["motion_mask"], torch.tensor(mapped[1]["motion_mask"]))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_num_frames", "17"], r"made with --max_num_frames=9, but training is given --max_num_frames=17"),
        (["--tsa_mask_ratio", "0.3"], r"made with --tsa_mask_ratio=0.2, but training is given --tsa_mask_ratio=0.3"),
        (["--teacher_num_frames", "4"], r"made with --teacher_num_frames=8, .* given --teacher_num_frames=4"),
        (["--teacher_height", "64"], r"made with --teacher_height=32, .* given --teacher_height=64"),
    ],
)
def test_precomputed_features_made_with_other_settings_are_refused(tiny, tmp_path, flags, message):
    plain_map(tiny, tmp_path / "pre")
    with pytest.raises(FlagError, match=message), flag_errors():
        plan_training(parse_script_args(precomputed_flags(tiny, tmp_path / "pre", tmp_path / "out", *flags)))


def test_precomputed_features_with_unknown_or_mixed_settings_are_refused(tiny, tmp_path):
    import datasets

    mapped = plain_map(tiny, tmp_path / "pre")
    mapped.remove_columns("teacher_settings").save_to_disk(tmp_path / "unknown")
    with (
        pytest.raises(
            FlagError,
            match=r"no 'teacher_settings' column beside them, so the settings they were made "
            r"with are unknown; precompute them again",
        ),
        flag_errors(),
    ):
        plan_training(parse_script_args(precomputed_flags(tiny, tmp_path / "unknown", tmp_path / "out")))
    other = plain_map(tiny, tmp_path / "other", mask_ratio=0.5)
    datasets.concatenate_datasets([mapped, other]).save_to_disk(tmp_path / "mixed")
    with pytest.raises(FlagError, match=r"made with 2 different settings"), flag_errors():
        plan_training(parse_script_args(precomputed_flags(tiny, tmp_path / "mixed", tmp_path / "out")))


def test_precompute_then_train_with_the_precompute_column_flags_or_none(tiny, tmp_path):
    """The README's recipe: the features CLI is given the training data flags; training reads its output with the
    same --caption_column/--video_column, or with none."""
    from diffusers_tsa.features.__main__ import main as precompute

    precompute([
        "--instance_data_root", str(tiny / "data"), "--caption_column", "prompts.txt", "--video_column", "videos.txt",
        "--teacher_model_name_or_path", str(tiny / "teacher"), "--height", "96", "--width", "144",
        "--max_num_frames", "9", "--output_dir", str(tmp_path / "pre"),
    ])  # fmt: skip
    same = plan_training(parse_script_args(precomputed_flags(tiny, tmp_path / "pre", tmp_path / "out")))
    flags = precomputed_flags(tiny, tmp_path / "pre", tmp_path / "out")
    for flag in ("--instance_data_root", "--caption_column", "--video_column"):
        i = flags.index(flag)
        del flags[i : i + 2]
    none = plan_training(parse_script_args(flags))
    for plan in (same, none):
        assert plan.table["caption"][0] == f"{PROMPT} at speed 3" and plan.alignment.features_column is not None
        assert plan.table["video"][0] == str(tiny / "data" / "clips" / "3.mp4")


# --- Non-finite losses, exact resume, unreadable clips, captions --------------------------------------------------


def nan_teacher(folder):
    teacher = tiny_videomae()
    with torch.no_grad():
        teacher.encoder.layer[0].attention.output.dense.weight.fill_(float("nan"))  # a broken teacher checkpoint
    teacher.save_pretrained(folder)
    return folder


def test_consecutive_non_finite_steps_stop_the_run_and_are_never_logged_as_a_loss(tiny, tmp_path):
    pytest.importorskip("tensorboard", reason="the logged scalars are read from tensorboard's event files")
    out = tmp_path / "out"
    code, log = run_script(
        tiny,
        out,
        "--max_train_steps",
        "8",
        "--max_nonfinite_steps",
        "3",
        "--report_to",
        "tensorboard",
        "--teacher_model_name_or_path",
        str(nan_teacher(tmp_path / "nan-teacher")),
        expect_success=False,
    )
    assert code == 1 and "error: 3 batches in a row had a non-finite loss" in log
    assert "--max_nonfinite_steps" in log and not (out / "pytorch_lora_weights.safetensors").exists()
    scalars = logged_scalars(out)
    assert "loss/total" not in scalars and "loss/alignment" not in scalars  # skipped, never logged as 0
    assert scalars["data/skipped_batches"] == [(1, 1.0), (2, 2.0)]


def test_a_run_resumed_inside_an_epoch_ends_bit_identical_to_an_uninterrupted_one(tiny, tmp_path):
    """4 clips, batch 1: 4 steps an epoch; the resumed run stops after step 3 and resumes inside epoch 0. Random
    flips and crops are on, so the data order, the crops, the flips and the noise must all be reproduced. The
    uninterrupted run also probes the alignment every 2 steps, which must not change what it trains."""
    pytest.importorskip("tensorboard", reason="the logged scalars are read from tensorboard's event files")
    flags = [
        "--train_batch_size",
        "1",
        "--random_flip",
        "--video_reshape_mode",
        "random",
        "--checkpointing_steps",
        "3",
    ]
    probed = ["--validation_steps", "2", "--report_to", "tensorboard"]
    run_script(tiny, tmp_path / "straight", *flags, *probed, "--max_train_steps", "6")
    run_script(tiny, tmp_path / "resumed", *flags, "--max_train_steps", "3")
    assert (tmp_path / "resumed" / "checkpoint-3" / "data_order.json").is_file()
    run_script(tiny, tmp_path / "resumed", *flags, "--max_train_steps", "6", "--resume_from_checkpoint", "latest")
    straight = load_file(tmp_path / "straight" / "pytorch_lora_weights.safetensors")
    resumed = load_file(tmp_path / "resumed" / "pytorch_lora_weights.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)  # 160 px clips cropped to 144: crops vary
    assert any(not torch.equal(straight[k], torch.zeros_like(straight[k])) for k in straight if "lora_B" in k)
    # The probe: at the start, every 2 steps, in agreement.jsonl and the trackers, with its pictures.
    probes = read_agreement(tmp_path / "straight")
    assert [p["step"] for p in probes] == [0, 2, 4, 6] and all(0 <= p["top1_agreement"] <= 1 for p in probes)
    scalars = logged_scalars(tmp_path / "straight")
    assert [step for step, _ in scalars["alignment/top1_agreement"]] == [0, 2, 4, 6]
    assert [v for _, v in scalars["alignment/tempered_kl"]] == pytest.approx([p["tempered_kl"] for p in probes])
    validation = tmp_path / "straight" / "validation"
    pictures = {"motion_mask.png", *(f"correspondence-{step}.png" for step in (0, 2, 4, 6))}
    assert {p.name for p in validation.glob("*.png")} == pictures
    assert not (tmp_path / "resumed" / "validation").exists()


def files_of(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_a_preempted_run_saves_refuses_other_settings_and_resumes_bit_identical(tiny, tmp_path):
    """The user's signal (SIGUSR1) mid-run: the step ends, a checkpoint is saved, one line is logged and the exit
    status is not 0. A resume with another --rank is refused before any weight loads and changes no file; the resume
    with the run's settings (and more steps, which is applied and logged) ends bit-identical to an uninterrupted
    run. The script runs without `accelerate launch`, so that the signal reaches the training process alone."""
    out, log_file = tmp_path / "preempted", tmp_path / "preempted.log"
    command = [sys.executable, str(SCRIPT), *common_flags(tiny, out), "--max_train_steps", "400"]
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [*command, "--preemption_signal", "SIGUSR1"], stdout=log, stderr=subprocess.STDOUT, env=offline_env()
        )
        deadline = time.time() + 300
        while "***** Running training *****" not in log_file.read_text() and time.time() < deadline:
            assert process.poll() is None, log_file.read_text()[-4000:]
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGUSR1)
        assert process.wait(timeout=300) == 128 + signal.SIGUSR1
    text = log_file.read_text()
    (stopped_at,) = [int(name.split("-")[1]) for name in checkpoints(out)]
    assert stopped_at < 400 and text.count("SIGUSR1 received: stopped after step") == 1
    assert f"saved {out / f'checkpoint-{stopped_at}'}; continue with --resume_from_checkpoint latest" in text
    assert not (out / "pytorch_lora_weights.safetensors").exists()

    before = files_of(out)
    resume = ["--resume_from_checkpoint", "latest", "--max_train_steps", str(stopped_at + 2)]
    code, log = run_script(tiny, out, *resume, "--rank", "8", expect_success=False)
    assert code == 1 and "was trained with --rank=4, but this run is given --rank=8" in log
    assert "Resuming from checkpoint" not in log and "Loading pipeline components" not in log
    assert files_of(out) == before  # not even training_config.json was rewritten

    _, log = run_script(tiny, out, *resume)
    assert "Resuming with changed settings, applied from the checkpoint's step on: --max_train_steps 400 -> " in log
    run_script(tiny, tmp_path / "straight", "--max_train_steps", str(stopped_at + 2))
    straight = load_file(tmp_path / "straight" / "pytorch_lora_weights.safetensors")
    resumed = load_file(out / "pytorch_lora_weights.safetensors")
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_folders_without_a_model_or_teacher_config_are_refused_naming_the_flag(tiny, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for flag, message in (
        ("--pretrained_model_name_or_path", "has no readable `model_index.json`"),
        ("--teacher_model_name_or_path", "has no readable teacher config"),
    ):
        args = parse_script_args([*common_flags(tiny, tmp_path / "out"), flag, str(empty)])
        with pytest.raises(FlagError, match=rf"^{flag}='{empty}' {message}: .*{empty}") as err, flag_errors():
            plan_training(args)
        assert "\n" not in str(err.value)
