from __future__ import annotations

import pytest

from tests.static.test_engine import MISSING_ZERO_GRAD

pytest_plugins = ["pytester"]


def test_each_file_is_an_item_that_fails_with_its_findings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken=MISSING_ZERO_GRAD.lstrip())
    pytester.makepyfile(clean="import torch\nprint(torch.__name__)\n")
    result = pytester.runpytest("--pitfall-guard", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*broken.py::pitfall-guard FAILED*",
            "*clean.py::pitfall-guard PASSED*",
            "*broken.py:5:5: PG101 optimizer 'opt' steps in the loop at line 3*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_without_the_option_nothing_is_linted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken=MISSING_ZERO_GRAD.lstrip())
    result = pytester.runpytest()
    assert "::pitfall-guard" not in result.stdout.str()
    result.assert_outcomes()


def test_settings_of_the_project_apply(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken=MISSING_ZERO_GRAD.lstrip())
    pytester.makepyprojecttoml('[tool.pitfall-guard]\nignore = ["PG101"]\n')
    pytester.runpytest("--pitfall-guard").assert_outcomes(passed=1)
