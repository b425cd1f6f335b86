import pytest
import torch


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
