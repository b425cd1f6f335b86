"""The minimum versions setup.cfg declares are the ones `make test-minimum` installs."""

import configparser
import re
from pathlib import Path

import pytest


ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.minimum


def test_the_declared_minimums_are_the_tested_ones():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = dict(re.findall(r"^([\w-]+)>=([\d.]+)$", config["options"]["install_requires"], re.MULTILINE))
    (line,) = [line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("MINIMUM :=")]
    tested = dict(pin.split("==") for pin in line.split(":=")[1].split())
    for name, version in tested.items():
        assert declared[name] == version.removesuffix(".0"), name  # `torch==2.6.0` tests `torch>=2.6`
