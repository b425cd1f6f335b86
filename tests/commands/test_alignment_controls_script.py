"""The training script with the alignment controls, end to end on the tiny models: a weight schedule logged at each
step and continued exactly by a resumed run, a preset printed and on the card, and the student's own block as the
target with no teacher."""

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_script import common_flags, launch_command, logged_scalars, offline_env, run_script, tiny  # noqa: F401


pytestmark = pytest.mark.slow

SCHEDULE = [
    "--alignment_weight_warmup_steps",
    "2",
    "--alignment_weight_schedule",
    "linear",
    "--alignment_weight_end",
    "0.1",
    "--alignment_weight_decay_steps",
    "3",
    "--alignment_weight_threshold_action",
    "stop",
    "--alignment_weight_threshold",
    "-100",  # never reached: the EMA is kept, logged and resumed
    "--train_batch_size",
    "1",
    "--checkpointing_steps",
    "3",
    "--report_to",
    "tensorboard",
]


def scalars_of_every_run(output_dir, tag):
    """`(step, value)` of `tag` across the event files of every run into `output_dir` (a resumed run adds one)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for path in sorted((Path(output_dir) / "logs").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path)).Reload()
        if tag in accumulator.Tags()["scalars"]:
            values += [(e.step, e.value) for e in accumulator.Scalars(tag)]
    return sorted(values)


def test_the_weight_schedule_is_logged_and_a_resumed_run_continues_it_exactly(tiny, tmp_path):  # noqa: F811
    pytest.importorskip("tensorboard", reason="the logged scalars are read from tensorboard's event files")
    run_script(tiny, tmp_path / "straight", *SCHEDULE, "--max_train_steps", "6")
    run_script(tiny, tmp_path / "resumed", *SCHEDULE, "--max_train_steps", "3")
    assert (tmp_path / "resumed" / "checkpoint-3" / "alignment_weight.json").is_file()
    run_script(tiny, tmp_path / "resumed", *SCHEDULE, "--max_train_steps", "6", "--resume_from_checkpoint", "latest")

    straight = logged_scalars(tmp_path / "straight")
    weights = [value for _, value in straight["alignment/weight"]]
    # lambda 0.5: warm-up over 2 steps, then linear to 0.1 over 3 steps.
    assert weights == pytest.approx([0.25, 0.5, 0.5, 0.5 - 0.4 / 3, 0.5 - 0.8 / 3, 0.1])
    for tag in ("alignment/weight", "alignment/loss_ema"):  # exactly the same numbers, steps 1-3 then 4-6
        assert scalars_of_every_run(tmp_path / "resumed", tag) == straight[tag]
    a = load_file(tmp_path / "straight" / "pytorch_lora_weights.safetensors")
    b = load_file(tmp_path / "resumed" / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    card = (tmp_path / "straight" / "README.md").read_text()
    assert "alignment_weight_schedule" in card and "linear" in card and "alignment_weight (last step)" in card


def test_a_preset_is_printed_and_on_the_card_and_a_given_flag_overrides_it(tiny, tmp_path):  # noqa: F811
    flags = ["--alignment_preset", "crepa-simpletuner", "--teacher", str(tiny / "image_teacher")]
    # The tiny CogVideoX has 2 blocks: the preset's block 9 is overridden by the common --alignment_depth 1.
    _, log = run_script(tiny, tmp_path / "out", *flags, "--max_train_steps", "1")
    assert "Alignment preset = crepa-simpletuner" in log and "overridden: --alignment_depth 1" in log
    assert "Student grid (3, 6, 9) -> teacher grid (3, 37, 37)" in log
    card = (tmp_path / "out" / "README.md").read_text()
    assert "crepa-simpletuner" in card and "layernorm_linear" in card


def test_the_students_own_block_trains_with_no_teacher(tiny, tmp_path):  # noqa: F811
    flags = common_flags(tiny, tmp_path / "out")
    at = flags.index("--teacher_model_name_or_path")
    del flags[at : at + 2]
    command = launch_command(
        tiny, tmp_path / "out", *flags, "--alignment_loss", "crepa", "--alignment_target_depth", "2", common=False
    )
    result = subprocess.run([*command, "--max_train_steps", "2"], capture_output=True, text=True, env=offline_env())
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "the student's own block 2, without gradient" in log
    assert Path(tmp_path / "out" / "alignment_projector" / "config.json").is_file()
