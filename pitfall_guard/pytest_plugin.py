"""The pytest plugin: static linting of test files, and a runtime guard around tests.

`pytest --pitfall-guard` lints every collected .py file: each file becomes an item
`path::pitfall-guard` that fails with the file's findings (concise, no traceback) and passes
when the file is clean. The `pitfall_guard` fixture yields a runtime `Guard` active during the
test (`.findings`, `.assert_clean()`), and `@pytest.mark.pitfall_guard(select=..., ignore=...)`
runs the test under a guard and fails it (FAILED, not ERROR) with the findings. Settings come
from the [tool.pitfall-guard] table of the pyproject.toml nearest to pytest's root directory.

This module is loaded by every pytest run of the environment: it never imports torch itself
(a guard imports it when a test enters one).
"""

from __future__ import annotations

import io
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pitfall_guard.config import Config, load_config
from pitfall_guard.findings import Finding
from pitfall_guard.plugins import Plugins, load_plugins
from pitfall_guard.report.base import RunSummary
from pitfall_guard.report.text import ConciseReporter
from pitfall_guard.static.discovery import matches_any
from pitfall_guard.static.engine import check_file
from pitfall_guard.static.versions import target_for

if TYPE_CHECKING:
    from pitfall_guard.runtime.guard import Guard

_SETTINGS = pytest.StashKey[tuple[Config, Plugins]]()
_MARKER = "pitfall_guard"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pitfall-guard")
    group.addoption(
        "--pitfall-guard",
        action="store_true",
        default=False,
        help="check each collected .py file with pitfall-guard (one item per file)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(select=None, ignore=None): run the test under a pitfall-guard runtime "
        "guard and fail it when the guard finds pitfalls",
    )
    if config.getoption("pitfall_guard"):
        settings = load_config(start=config.rootpath)
        plugins: Plugins = load_plugins(settings.disable_plugins)
        settings.validate_codes(plugins.codes)
        config.stash[_SETTINGS] = (settings, plugins)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if file_path.suffix != ".py" or _SETTINGS not in config.stash:
        return None
    settings, _ = config.stash[_SETTINGS]
    if matches_any(file_path, settings.exclude, settings.root):
        return None
    return PitfallGuardFile.from_parent(parent, path=file_path)


class PitfallGuardFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        yield PitfallGuardItem.from_parent(self, name="pitfall-guard")


class PitfallGuardFailure(Exception):
    def __init__(self, findings: Sequence[Finding]) -> None:
        super().__init__(f"{len(findings)} pitfall-guard findings")
        self.findings = list(findings)


class PitfallGuardItem(pytest.Item):
    def runtest(self) -> None:
        settings, plugins = self.config.stash[_SETTINGS]
        enabled = plugins.enabled_static_rules(settings, self.path)
        torch = settings.torch_version or target_for(self.path)
        findings = [
            finding
            for finding in check_file(self._display_path(), enabled, torch)
            if settings.is_enabled(
                finding.code, self.path, preview=plugins.is_preview(finding.code)
            )
        ]
        if findings:
            raise PitfallGuardFailure(findings)

    def _display_path(self) -> Path:
        try:
            return self.path.relative_to(self.config.rootpath)
        except ValueError:
            return self.path

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: str | None = None,
    ) -> str:
        if isinstance(excinfo.value, PitfallGuardFailure):
            buffer = io.StringIO()
            ConciseReporter(buffer).report(excinfo.value.findings, RunSummary(files_checked=1))
            return buffer.getvalue().rstrip("\n")
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


# -- the runtime guard around tests ------------------------------------------------------------


def _codes(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    return [str(code).strip().upper() for code in value if str(code).strip()]


def _guard_for(item: pytest.Item) -> Guard:
    from pitfall_guard.runtime.guard import Guard

    marker = item.get_closest_marker(_MARKER)
    options = dict(marker.kwargs) if marker is not None else {}
    select, ignore = options.pop("select", None), options.pop("ignore", None)
    if options or (marker is not None and marker.args):
        raise TypeError(f"@pytest.mark.{_MARKER} takes only select= and ignore=")
    return Guard(
        select=_codes(select),
        ignore=_codes(ignore) or (),
        config=load_config(start=item.config.rootpath),
    )


@pytest.fixture
def pitfall_guard(request: pytest.FixtureRequest) -> Iterator[Guard]:
    """A runtime pitfall-guard `Guard`, active during the test: read `.findings` or call
    `.assert_clean()`. A `pitfall_guard` marker on the test sets its select=/ignore=."""
    assert isinstance(request.node, pytest.Item)
    with _guard_for(request.node) as guard:
        yield guard


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    if item.get_closest_marker(_MARKER) is None:
        return (yield)
    guard: Guard | None = getattr(item, "funcargs", {}).get(_MARKER)
    if guard is None:
        guard = _guard_for(item)
        guard.__enter__()
    try:
        result = yield
    except BaseException as error:
        guard.__exit__(type(error), error, error.__traceback__)
        findings = guard.findings
        if findings:
            error.add_note(_failure_text(findings))
        raise
    guard.close()  # also the fixture's guard: the verdict belongs to the call phase
    findings = guard.findings
    if findings:
        pytest.fail(_failure_text(findings), pytrace=False)
    return result


def _failure_text(findings: Sequence[Finding]) -> str:
    from pitfall_guard.runtime.guard import describe_findings

    return "pitfall-guard found pitfalls while the test ran:\n" + describe_findings(findings)
