"""The base class of runtime monitors (importing it does not import torch)."""

from __future__ import annotations

from typing import ClassVar

from pitfall_guard.findings import Severity


class RuntimeMonitor:
    """Watches one pitfall during a real run.

    Subclasses set `code`, `name` and `summary` (the same code as the static rule for the same
    pitfall, so that both sides speak one language) and document themselves in the class
    docstring with the headings *What it catches*, *Why it matters*, *Example* and *Fix*.
    """

    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    severity: ClassVar[Severity] = Severity.ERROR
