"""`# expect: PG101` markers: which lines of a script must be reported, with which codes."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable

from pitfall_guard.findings import Finding

_MARKER = re.compile(r"#\s*expect:\s*(?P<codes>PG\d{3}(?:\s*,\s*PG\d{3})*)")

Expectation = tuple[int, str]


@functools.cache
def _marker_pattern(marker: str) -> re.Pattern[str]:
    if marker == "expect":
        return _MARKER
    return re.compile(rf"#\s*{re.escape(marker)}:\s*(?P<codes>PG\d{{3}}(?:\s*,\s*PG\d{{3}})*)")


def expected_findings(source: str, marker: str = "expect") -> Counter[Expectation]:
    """(line, code) pairs announced by the `# expect:` comments of `source` (or by another
    marker: `# expect-runtime:` for the findings of a guarded run)."""
    pattern = _marker_pattern(marker)
    expected: Counter[Expectation] = Counter()
    for number, line in enumerate(source.splitlines(), start=1):
        match = pattern.search(line)
        if match:
            for code in re.split(r"\s*,\s*", match.group("codes")):
                expected[(number, code)] += 1
    return expected


def actual_findings(findings: Iterable[Finding]) -> Counter[Expectation]:
    return Counter((finding.line, finding.code) for finding in findings)


def describe_mismatch(
    expected: Counter[Expectation], actual: Counter[Expectation], findings: Iterable[Finding]
) -> str:
    missing = sorted((expected - actual).elements())
    extra = sorted((actual - expected).elements())
    messages = {(f.line, f.code): f.message for f in findings}
    lines = [f"missing: line {line} {code}" for line, code in missing]
    lines += [f"extra:   line {line} {code}: {messages[(line, code)]}" for line, code in extra]
    return "\n".join(lines)
