"""The output formats that ship with pitfall-guard, registered as a plugin like any other."""

from __future__ import annotations

from pitfall_guard.hookspecs import hookimpl
from pitfall_guard.report.base import Reporter
from pitfall_guard.report.json import JsonReporter
from pitfall_guard.report.text import ConciseReporter, FullReporter


@hookimpl
def pitfall_guard_reporters() -> dict[str, type[Reporter]]:
    return {"full": FullReporter, "concise": ConciseReporter, "json": JsonReporter}
