"""Runtime findings, one per code and place: an event seen again adds to the finding's count."""

from __future__ import annotations

import dataclasses
import linecache
from collections.abc import Iterable
from pathlib import Path

from pitfall_guard.config import Config
from pitfall_guard.findings import Finding, Location, Severity, Source
from pitfall_guard.static.noqa import suppressed_codes

FindingKey = tuple[str, str, int]
INTERNAL_ERROR = ("PG002", "internal-error")


class FindingCollector:
    """Findings of one guarded run, deduplicated by (code, path, line)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._findings: dict[FindingKey, Finding] = {}
        self._suppressed: set[FindingKey] = set()

    def add(
        self,
        code: str,
        name: str,
        message: str,
        location: Location,
        *,
        severity: Severity = Severity.ERROR,
        hint: str | None = None,
        count: int = 1,
    ) -> None:
        key = (code, location.path, location.line)
        known = self._findings.get(key)
        if known is not None:
            self._findings[key] = dataclasses.replace(known, count=known.count + count)
            return
        if key in self._suppressed:
            return
        if not self._wanted(code, location):
            self._suppressed.add(key)
            return
        self._findings[key] = Finding(
            code=code,
            name=name,
            message=message,
            location=location,
            severity=severity,
            source=Source.RUNTIME,
            hint=hint,
            count=count,
        )

    def _wanted(self, code: str, location: Location) -> bool:
        """Per-file ignores and `# noqa` comments apply to runtime findings as to static ones."""
        if not self.config.is_enabled(code, Path(location.path)):
            return False
        codes = suppressed_codes(linecache.getline(location.path, location.line))
        return codes is None or (bool(codes) and code not in codes)

    def findings(self) -> list[Finding]:
        # A copy first: a graph freed mid-sort may report (its __del__ runs Python code).
        return sorted(self._findings.copy().values(), key=Finding.sort_key)

    def replace_all(self, findings: Iterable[Finding]) -> None:
        """Take `findings` (say, merged from every rank) as the run's findings."""
        self._findings = {(f.code, f.path, f.line): f for f in findings}
