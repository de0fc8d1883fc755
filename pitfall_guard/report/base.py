"""The base class of reporters. A reporter knows findings, never the rules behind them."""

from __future__ import annotations

import abc
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from pitfall_guard.findings import Finding


@dataclass(frozen=True)
class RunSummary:
    files_checked: int
    # Why the check did not cover everything (a guarded script that crashed): then no
    # findings is not "All checks passed!".
    incomplete: str | None = None
    # Files that `check` read and left alone (they never mention torch).
    files_skipped: int = 0


@dataclass(frozen=True)
class CodeCount:
    code: str
    name: str
    count: int
    fixable: bool


def count_by_code(findings: Sequence[Finding]) -> list[CodeCount]:
    """Findings counted per code, most frequent first."""
    counts = Counter(f.code for f in findings)
    names = {f.code: f.name for f in findings}
    fixable = {f.code for f in findings if f.fix is not None and f.fix.edits}
    return [
        CodeCount(code, names[code], count, code in fixable)
        for code, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Reporter(abc.ABC):
    """Writes findings to a stream in one output format."""

    def __init__(self, stream: TextIO, *, color: bool = False) -> None:
        self.stream = stream
        self.color = color

    @abc.abstractmethod
    def report(self, findings: Sequence[Finding], summary: RunSummary) -> None:
        """Write every finding (already sorted) and, for people, a closing summary."""

    def statistics(self, findings: Sequence[Finding]) -> None:
        """Write how many findings each code has, instead of the findings themselves."""
        for row in count_by_code(findings):
            mark = "[*]" if row.fixable else "[ ]"
            self.stream.write(f"{row.count:>5}  {row.code}  {mark} {row.name}\n")
        total = len(findings)
        self.stream.write(f"Found {total} finding{'s' if total != 1 else ''}.\n")
