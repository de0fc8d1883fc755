"""One test for every runtime monitor: its docs, and its VALID and INVALID example scripts,
each run in this process under a guard with every registered monitor enabled."""

from __future__ import annotations

import textwrap

import pytest

from pitfall_guard.plugins import load_plugins
from pitfall_guard.runtime.monitor import RuntimeMonitor
from tests.expectations import actual_findings, describe_mismatch, expected_findings
from tests.runtime.conftest import RAISES, guarded

MONITORS = load_plugins().runtime_monitors
DOC_HEADINGS = ("## What it catches", "## Why it matters", "## Example", "## Fix")


def _examples(kind: str) -> list[object]:
    return [
        pytest.param(monitor, textwrap.dedent(example), id=f"{monitor.code}-{kind}-{index}")
        for monitor in MONITORS
        for index, example in enumerate(getattr(monitor, kind))
    ]


@pytest.mark.parametrize("monitor", MONITORS, ids=lambda monitor: monitor.code)
def test_monitor_is_documented_with_examples(monitor: type[RuntimeMonitor]) -> None:
    doc = monitor.__doc__ or ""
    assert all(heading in doc for heading in DOC_HEADINGS), f"{monitor.code} docs lack a heading"
    assert monitor.VALID, f"{monitor.code} has no VALID example"
    assert monitor.INVALID, f"{monitor.code} has no INVALID example"
    assert monitor.name == monitor.name.lower() and " " not in monitor.name
    assert monitor.summary and monitor.hint


def _assert_ends_as_announced(example: str, error: BaseException | None) -> None:
    announced = RAISES.search(example)
    if announced is None:
        assert error is None, f"the example raised {error!r}"
    else:
        assert type(error).__name__ == announced.group("error"), f"expected it to raise: {error!r}"


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(("monitor", "example"), _examples("VALID"))
def test_valid_example_has_no_findings(monitor: type[RuntimeMonitor], example: str) -> None:
    guard, error = guarded(example)
    _assert_ends_as_announced(example, error)
    assert guard.findings == [], [f"{f.line}: {f.code} {f.message}" for f in guard.findings]


@pytest.mark.parametrize(("monitor", "example"), _examples("INVALID"))
def test_invalid_example_reports_exactly_the_marked_lines(
    monitor: type[RuntimeMonitor], example: str
) -> None:
    expected = expected_findings(example)
    assert monitor.code in {code for _, code in expected}, "mark the lines with # expect:"
    guard, error = guarded(example)
    _assert_ends_as_announced(example, error)
    findings = guard.findings
    actual = actual_findings(findings)
    assert actual == expected, describe_mismatch(expected, actual, findings)
