"""The command-line layer: every command declares the student flags through one group and checks them the same way."""

import importlib

import pytest

from diffusers_tsa.data import ClipSpec
from diffusers_tsa.data.video import recorded_clip_settings
from diffusers_tsa.eval.generate import parse_args as generate_args
from diffusers_tsa.features.__main__ import parse_args as features_args
from diffusers_tsa.visualize.__main__ import parse_args as visualize_args


pytestmark = pytest.mark.minimum  # `make test-minimum`'s fast subset


def training_args(argv):
    return importlib.import_module("diffusers_tsa.train_text_to_video_tsa").parse_args(argv)


#: Each command with the flags it needs besides the student's.
COMMANDS = {
    "train_text_to_video_tsa.py": (training_args, ["--instance_data_root", "data"]),
    "python -m diffusers_tsa.features": (features_args, ["--output_dir", "out"]),
    "python -m diffusers_tsa.visualize": (visualize_args, ["correspondence", "--video", "v.mp4", "--teacher", "t"]),
    "python -m eval.generate": (generate_args, ["--benchmark", "vbench", "--output_dir", "out"]),
}
STUDENT = [
    "--pretrained_model_name_or_path", "base", "--revision", "r1", "--variant", "fp16", "--model_family", "wan",
    "--max_sequence_length", "64", "--enable_slicing", "--enable_tiling",
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_reads_the_student_flags_alike(command):
    parse, rest = COMMANDS[command]
    args = parse([*rest, *STUDENT])
    read = [getattr(args, key) for key in ("pretrained_model_name_or_path", "revision", "variant", "model_family")]
    assert read == ["base", "r1", "fp16", "wan"]
    assert (args.max_sequence_length, args.enable_slicing, args.enable_tiling) == (64, True, True)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_an_unknown_model_family(command, capsys):
    parse, rest = COMMANDS[command]
    with pytest.raises(SystemExit):
        parse([*rest, "--pretrained_model_name_or_path", "base", "--model_family", "sora"])
    assert "argument --model_family: invalid choice: 'sora'" in capsys.readouterr().err


def test_the_scoring_commands_report_a_bad_argument_without_importing_torch():
    """`eval.report`, `eval.videophy`, `eval.videophy2`, `eval.vbench` and `eval.prompt_files` need neither torch,
    diffusers nor transformers to parse (the package's names are imported on first use)."""
    import subprocess
    import sys

    check = """
import runpy, sys
for command in ("report", "videophy", "videophy2", "vbench", "prompt_files"):
    sys.argv = [command, "--no_such_flag"]
    try:
        runpy.run_module(f"diffusers_tsa.eval.{command}", run_name="__main__")
    except SystemExit as exit:
        assert exit.code == 2, (command, exit.code)
print(sorted(m for m in ("torch", "diffusers", "transformers", "datasets") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "[]"
    assert [line.split(":")[0] for line in result.stderr.splitlines() if ": error: " in line] == [
        "report", "videophy", "videophy2", "vbench", "prompt_files"
    ]  # fmt: skip


def test_the_package_logs_name_flags_under_a_command(tmp_path, caplog):
    """A skipped clip's warning (logged by the package, in library terms) names the flag under `cli.run`; other
    libraries' messages and the package's outside a command are left as they are."""
    import logging

    from diffusers_tsa import cli
    from diffusers_tsa.data import ClipSpec, read_video
    from diffusers_tsa.errors import VideoDecodeError
    from diffusers_tsa.testing import write_test_clip

    write_test_clip(tmp_path / "short.mp4", num_frames=5)
    with pytest.raises(VideoDecodeError) as err:
        read_video(tmp_path / "short.mp4", ClipSpec(height=96, width=144, max_num_frames=9))

    def command():
        logging.getLogger("diffusers_tsa.features.transform").warning("Skipping a clip: %s", err.value)
        logging.getLogger("transformers").warning("Set `max_sequence_length` in %s", "config.json")

    with caplog.at_level(logging.WARNING):
        cli.run(command)
        logging.getLogger("diffusers_tsa.features.transform").warning("Skipping a clip: %s", err.value)
    package, other, library = (record.getMessage() for record in caplog.records)
    assert package.endswith("fewer than the 9 required (lower --max_num_frames to keep shorter clips).")
    assert other == "Set `max_sequence_length` in config.json"
    assert library.endswith("(lower `ClipSpec.max_num_frames` to keep shorter clips).")


def test_the_flags_shared_with_diffusers_example_mean_the_same_and_the_old_names_warn():
    """diffusers' `train_cogvideox_lora.py` reads `--fps` as the input videos' frame rate and random-crops for
    `--video_reshape_mode none`: ours were renamed `--validation_fps` and `stretch`, the old names still work."""
    rest = ["--instance_data_root", "data", "--pretrained_model_name_or_path", "base"]
    with pytest.warns(FutureWarning, match=r"--fps is deprecated: use --validation_fps"):
        args = training_args([*rest, "--fps", "12"])
    assert args.validation_fps == 12
    with pytest.warns(
        FutureWarning, match=r"--video_reshape_mode none is deprecated: use --video_reshape_mode stretch"
    ):
        args = training_args([*rest, "--video_reshape_mode", "none"])
    assert args.video_reshape_mode == "stretch"
    with pytest.warns(FutureWarning, match=r"`ClipSpec.reshape_mode='none'` is deprecated: use 'stretch'"):
        assert ClipSpec(reshape_mode="none") == ClipSpec(reshape_mode="stretch")
    # A dataset precomputed with the old name matches a run given the new one.
    assert recorded_clip_settings({"height": 8, "reshape_mode": "none"}) == {"height": 8, "reshape_mode": "stretch"}


def test_report_to_defaults_to_tensorboard_only_where_it_is_installed(monkeypatch):
    script = importlib.import_module("diffusers_tsa.train_text_to_video_tsa")
    rest = ["--instance_data_root", "data", "--pretrained_model_name_or_path", "base"]
    for installed, expected in ((True, "tensorboard"), (False, "none")):
        monkeypatch.setattr(script, "tensorboard_installed", lambda installed=installed: installed)
        assert script.parse_args(rest).report_to == expected
    assert script.parse_args([*rest, "--report_to", "wandb"]).report_to == "wandb"
