"""Text output for people: `full` (code frames) and `concise` (one line a finding)."""

from __future__ import annotations

import linecache
from collections.abc import Sequence

from pitfall_guard.findings import Finding
from pitfall_guard.report.base import Reporter, RunSummary

_RESET = "\x1b[0m"
_STYLES = {"bold": "\x1b[1m", "red": "\x1b[31;1m", "cyan": "\x1b[36m", "blue": "\x1b[34;1m"}


class ConciseReporter(Reporter):
    """`path:line:col: PG101 [*] message`, one line per finding."""

    def paint(self, text: str, style: str) -> str:
        return f"{_STYLES[style]}{text}{_RESET}" if self.color else text

    def headline(self, finding: Finding) -> str:
        where = self.paint(f"{finding.path}:{finding.line}:{finding.column}:", "bold")
        fixable = " [*]" if finding.fix is not None and finding.fix.edits else ""
        seen = f" (seen {finding.count} times)" if finding.count > 1 else ""
        return f"{where} {self.paint(finding.code, 'red')}{fixable} {finding.message}{seen}"

    def report(self, findings: Sequence[Finding], summary: RunSummary) -> None:
        for finding in findings:
            self.stream.write(self.headline(finding) + "\n")
        self.write_summary(findings, summary)

    def write_summary(self, findings: Sequence[Finding], summary: RunSummary) -> None:
        if not findings and summary.incomplete:
            self.stream.write(f"No findings in what ran, but {summary.incomplete}.\n")
            return
        if not findings:
            checked = summary.files_checked
            skipped = summary.files_skipped
            left = (
                f"; {skipped} file{'s' if skipped != 1 else ''} without torch skipped"
                if skipped
                else ""
            )
            if not checked:
                which = "the file never mentions" if skipped == 1 else f"none of the {skipped} "
                which += "" if skipped == 1 else "files mention"
                self.stream.write(f"Nothing to check: {which} torch.\n")
                return
            self.stream.write(
                f"All checks passed! ({checked} file{'s' if checked != 1 else ''} checked{left})\n"
            )
            return
        files = len({f.path for f in findings})
        fixable = sum(1 for f in findings if f.fix is not None and f.fix.edits)
        total = len(findings)
        line = (
            f"Found {total} finding{'s' if total != 1 else ''} "
            f"in {files} file{'s' if files != 1 else ''}"
        )
        if fixable:
            line += f" ({fixable} with an automatic fix, marked [*])"
        self.stream.write(line + ".\n")


class FullReporter(ConciseReporter):
    """The headline, then the source line with a caret under the span, then the hint."""

    def report(self, findings: Sequence[Finding], summary: RunSummary) -> None:
        for finding in findings:
            self.stream.write(self.headline(finding) + "\n")
            self.stream.write(self.frame(finding))
            self.stream.write("\n")
        self.write_summary(findings, summary)

    def frame(self, finding: Finding) -> str:
        source = linecache.getline(finding.path, finding.line).rstrip("\n")
        gutter = " " * len(str(finding.line))
        bar = self.paint("|", "blue")
        lines = []
        if source:
            start = max(finding.column - 1, 0)
            same_line = finding.location.end_line in (None, finding.line)
            end_column = finding.location.end_column
            end = end_column - 1 if same_line and end_column is not None else len(source)
            width = max(end - start, 1)
            carets = self.paint("^" * width, "red")
            lines.append(f"{gutter} {bar}")
            lines.append(f"{self.paint(str(finding.line), 'blue')} {bar} {source}")
            lines.append(f"{gutter} {bar} {' ' * start}{carets} {self.paint(finding.code, 'red')}")
            lines.append(f"{gutter} {bar}")
        if finding.hint:
            lines.append(f"{gutter} = {self.paint('help:', 'cyan')} {finding.hint}")
        if finding.fix is not None and finding.fix.edits:
            safety = "" if finding.fix.safe else " (unsafe: changes behaviour, review it)"
            label = self.paint("fix:", "cyan")
            lines.append(f"{gutter} = {label} {finding.fix.description}{safety}")
        return "".join(line + "\n" for line in lines)
