"""One test for every registered rule: its docs, and its VALID and INVALID examples."""

from __future__ import annotations

import textwrap

import pytest

from pitfall_guard.plugins import load_plugins
from pitfall_guard.static.engine import check_source
from pitfall_guard.static.rule import StaticRule
from tests.expectations import actual_findings, describe_mismatch, expected_findings

RULES = load_plugins().static_rules
DOC_HEADINGS = ("## What it catches", "## Why it matters", "## Example", "## Fix")


def _examples(kind: str) -> list[object]:
    return [
        pytest.param(rule, textwrap.dedent(example), id=f"{rule.code}-{kind}-{index}")
        for rule in RULES
        for index, example in enumerate(getattr(rule, kind))
    ]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.code)
def test_rule_is_documented_with_examples(rule: type[StaticRule]) -> None:
    doc = rule.__doc__ or ""
    assert all(heading in doc for heading in DOC_HEADINGS), f"{rule.code} docs lack a heading"
    assert rule.VALID, f"{rule.code} has no VALID example"
    assert rule.INVALID, f"{rule.code} has no INVALID example"
    assert rule.name == rule.name.lower() and " " not in rule.name
    assert rule.summary


@pytest.mark.parametrize(("rule", "example"), _examples("VALID"))
def test_valid_example_has_no_findings(rule: type[StaticRule], example: str) -> None:
    findings = check_source(example, "example.py", [rule])
    assert findings == [], [f"{f.line}: {f.code} {f.message}" for f in findings]


@pytest.mark.parametrize(("rule", "example"), _examples("INVALID"))
def test_invalid_example_reports_exactly_the_marked_lines(
    rule: type[StaticRule], example: str
) -> None:
    expected = expected_findings(example)
    assert expected, "an INVALID example marks its reported lines with # expect:"
    assert {code for _, code in expected} == {rule.code}
    findings = check_source(example, "example.py", [rule])
    actual = actual_findings(findings)
    assert actual == expected, describe_mismatch(expected, actual, findings)
