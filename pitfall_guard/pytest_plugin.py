"""The pytest plugin: `pytest --pitfall-guard` lints every collected .py file as a test item.

Each file becomes an item `path::pitfall-guard` that fails with the file's findings (concise,
no traceback) and passes when the file is clean. Settings come from the [tool.pitfall-guard]
table of the pyproject.toml nearest to pytest's root directory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pitfall_guard.config import Config, load_config
from pitfall_guard.findings import Finding
from pitfall_guard.plugins import Plugins, load_plugins
from pitfall_guard.report.base import RunSummary
from pitfall_guard.report.text import ConciseReporter
from pitfall_guard.static.discovery import matches_any
from pitfall_guard.static.engine import check_file
from pitfall_guard.static.rule import StaticRule

_SETTINGS = pytest.StashKey[tuple[Config, list[type[StaticRule]]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pitfall-guard")
    group.addoption(
        "--pitfall-guard",
        action="store_true",
        default=False,
        help="check each collected .py file with pitfall-guard (one item per file)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("pitfall_guard"):
        settings = load_config(start=config.rootpath)
        plugins: Plugins = load_plugins(settings.disable_plugins)
        settings.validate_codes(plugins.codes)
        rules = [rule for rule in plugins.static_rules if settings.is_enabled(rule.code)]
        config.stash[_SETTINGS] = (settings, rules)


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
        settings, rules = self.config.stash[_SETTINGS]
        enabled = [rule for rule in rules if settings.is_enabled(rule.code, self.path)]
        findings = [
            finding
            for finding in check_file(self._display_path(), enabled)
            if settings.is_enabled(finding.code, self.path)
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
