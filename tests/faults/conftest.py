"""The fault suite's tally. A passed case marked ``bad_input`` (a value or file that must be refused
or handled) or ``fault`` (a crash, a failed write, a divergence, a race) counts once; records a
case finds missing or changed after a fault count as lost. After the run one line sums them up:
``faults: bad_inputs=N faults=M lost=L``."""

from __future__ import annotations

import pytest

TALLY = {"bad_inputs": 0, "faults": 0, "lost": 0}
KINDS = {"fault": "faults", "bad_input": "bad_inputs"}  # a fault case may sit in a bad-input module


def pytest_configure(config):
    config.addinivalue_line("markers", "bad_input: a bad value or file an entry point must answer clearly")
    config.addinivalue_line("markers", "fault: a crash, failed write, divergence or race that must lose nothing")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed:
        kind = next((key for marker, key in KINDS.items() if item.get_closest_marker(marker)), None)
        if kind:
            TALLY[kind] += 1


def pytest_terminal_summary(terminalreporter):
    if TALLY["bad_inputs"] or TALLY["faults"] or TALLY["lost"]:
        terminalreporter.write_line(
            f"faults: bad_inputs={TALLY['bad_inputs']} faults={TALLY['faults']} lost={TALLY['lost']}"
        )


@pytest.fixture
def lost():
    """``lost(records)``: count records a fault lost or changed (the case then fails on its own assert)."""

    def count(records: int) -> int:
        TALLY["lost"] += records
        return records

    return count
