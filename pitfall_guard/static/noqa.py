"""`# noqa` comments: `# noqa` or `# noqa: PG101, PG102` on a line, `# pitfall-guard: noqa`."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pitfall_guard.findings import Finding

_LINE_NOQA = re.compile(
    r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+|\s+[A-Z]+[0-9]+)*))?",
    re.IGNORECASE,
)
_FILE_NOQA = re.compile(r"^#\s*pitfall-guard:\s*noqa\s*$", re.IGNORECASE | re.MULTILINE)


def file_is_exempt(source: str) -> bool:
    """A line reading `# pitfall-guard: noqa` exempts the whole file."""
    return _FILE_NOQA.search(source) is not None


def suppressed_codes(line: str) -> frozenset[str] | None:
    """The codes a line's noqa comment names; an empty set means all; None: no comment."""
    if "#" not in line:
        return None
    match = _LINE_NOQA.search(line)
    if match is None:
        return None
    codes = match.group("codes")
    if codes is None:
        return frozenset()
    return frozenset(code.upper() for code in re.split(r"[\s,]+", codes) if code)


def apply_noqa(findings: Iterable[Finding], lines: list[str]) -> list[Finding]:
    """Drop the findings whose line carries a matching noqa comment."""
    kept = []
    for finding in findings:
        line = lines[finding.line - 1] if 0 < finding.line <= len(lines) else ""
        codes = suppressed_codes(line)
        if codes is None or (codes and finding.code not in codes):
            kept.append(finding)
    return kept
