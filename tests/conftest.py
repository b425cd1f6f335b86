import os

import pytest


# Under pytest-xdist (`make test`: two workers on two cores), each worker and every process it starts computes on one
# thread, instead of each taking every core: the tiny models' small ops then do not fight over the cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread count)


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    torch.manual_seed(0)
    yield


def pytest_terminal_summary(terminalreporter):
    """Says which optional suites (tests marked `optional_suite`, for software CI does not install) ran."""
    suites = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            for name in getattr(report, "optional_suites", ()):
                suites.setdefault(name, {}).setdefault(outcome, 0)
                suites[name][outcome] += 1
    if suites:
        terminalreporter.section("optional suites")
        for name, counts in sorted(suites.items()):
            ran = "ran" if set(counts) - {"skipped"} else "did not run"
            terminalreporter.write_line(f"{name}: {ran} ({', '.join(f'{n} {o}' for o, n in counts.items())})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result().optional_suites = [mark.args[0] for mark in item.iter_markers("optional_suite")]
