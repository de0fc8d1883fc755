"""The `pitfall_guard` fixture and the `@pytest.mark.pitfall_guard` marker, in a pytester run."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import pytest
import torch
from torch import nn


def train(clear: bool) -> None:
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        if clear:
            optimizer.zero_grad()


def test_fixture_sees_the_findings(pitfall_guard):
    train(clear=False)
    assert [(f.code, f.count) for f in pitfall_guard.findings] == [("PG101", 2)]


def test_fixture_assert_clean(pitfall_guard):
    train(clear=True)
    pitfall_guard.assert_clean()


def test_fixture_assert_clean_fails(pitfall_guard):
    train(clear=False)
    pitfall_guard.assert_clean()


@pytest.mark.pitfall_guard
def test_marker_fails_the_test():
    train(clear=False)


@pytest.mark.pitfall_guard(ignore=["PG101"])
def test_marker_with_ignore():
    train(clear=False)


@pytest.mark.pitfall_guard(select="PG3")
def test_marker_with_fixture(pitfall_guard):
    train(clear=False)
    assert pitfall_guard.active


@pytest.mark.pitfall_guard
def test_marker_clean():
    train(clear=True)
"""


def test_fixture_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_training=TESTS)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_fixture_assert_clean_fails FAILED*",
            "*test_marker_fails_the_test FAILED*",
            "*pitfall-guard found pitfalls while the test ran:",
            "*test_training.py:11:9: PG101 SGD.step() applies gradients*(seen 2 times)",
        ]
    )
    assert "ERROR" not in result.stdout.str()
