"""Machine-readable output: a JSON array of findings (1-based lines and columns)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pitfall_guard.findings import Finding
from pitfall_guard.report.base import Reporter, RunSummary, count_by_code


class JsonReporter(Reporter):
    def report(self, findings: Sequence[Finding], summary: RunSummary) -> None:
        json.dump([finding.to_dict() for finding in findings], self.stream, indent=2)
        self.stream.write("\n")

    def statistics(self, findings: Sequence[Finding]) -> None:
        rows = [
            {"code": row.code, "name": row.name, "count": row.count, "fixable": row.fixable}
            for row in count_by_code(findings)
        ]
        json.dump(rows, self.stream, indent=2)
        self.stream.write("\n")
