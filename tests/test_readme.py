"""The README's tiny-model section: every builder it names exists with the size its docstring gives, and its CPU
launches pass accelerate every value it would otherwise warn about."""

import re
from pathlib import Path

import diffusers_tsa.testing as testing


README = (Path(__file__).parents[1] / "README.md").read_text()
#: The `accelerate launch` values that, when not given, make it print "values were not passed" (on a CPU).
ACCELERATE_DEFAULTS = ("--num_processes", "--num_machines", "--mixed_precision", "--dynamo_backend")


def test_the_tiny_builders_of_every_family_are_shown_with_their_sizes():
    table = re.findall(r"^\| `(tiny_\w+)\((.*?)\)` \| `(\w+)`.*? \| (about [\d.]+ MB) \|", README, flags=re.M)
    assert {name for name, *_ in table} == {
        "tiny_cogvideox_components", "tiny_wan_components", "tiny_ltx_video_components"
    }  # fmt: skip
    assert ("tiny_cogvideox_components", "patch_size_t=2") in {(name, args) for name, args, *_ in table}
    for name, _, pipeline, size in table:
        assert f"`{pipeline}(**components)`" in getattr(testing, name).__doc__
        assert f"({size})" in getattr(testing, name).__doc__.splitlines()[0]
    for name in set(re.findall(r"\b(tiny_\w+)\(", README)):
        assert name in testing.__all__, name


def test_the_cpu_launches_pass_every_value_accelerate_warns_about():
    (launch,) = re.findall(r'^LAUNCH="(accelerate launch [^"]*)"', README, flags=re.M)
    assert "--cpu" in launch and all(flag in launch for flag in ACCELERATE_DEFAULTS)
    assert "--num_cpu_threads_per_process" in launch  # else accelerate picks one and says so
    bash = "\n".join(re.findall(r"```bash\n(.*?)```", README, flags=re.S))
    assert not re.search(r"accelerate launch --cpu(?! --num_processes 1 )", bash.replace(launch, "$LAUNCH"))
    assert "`accelerate launch --cpu --num_processes 2` silently runs one process" in README
