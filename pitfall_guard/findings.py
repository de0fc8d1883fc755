"""The one type every part of pitfall-guard speaks: a Finding, with its Location and Fix."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Severity(enum.Enum):
    """How sure and how bad: errors break training, warnings usually do, hints may."""

    ERROR = "error"
    WARNING = "warning"
    HINT = "hint"


class Maturity(enum.Enum):
    """Whether a rule is in the default selection (stable) or only run when asked (preview).

    As with ruff's preview rules: a rule whose findings are not yet right often enough on
    real code stays selectable by its code, but is left out of `ALL` and the defaults.
    """

    STABLE = "stable"
    PREVIEW = "preview"


class Source(enum.Enum):
    """Which side saw the pitfall: the code as written, or a real run."""

    STATIC = "static"
    RUNTIME = "runtime"


@dataclass(frozen=True, order=True)
class Location:
    """A span in a file; lines and columns are 1-based, the end column is exclusive."""

    path: str
    line: int
    column: int = 1
    end_line: int | None = None
    end_column: int | None = None


@dataclass(frozen=True)
class Edit:
    """Replace the text between two 1-based positions (end column exclusive)."""

    line: int
    column: int
    end_line: int
    end_column: int
    replacement: str


@dataclass(frozen=True)
class Fix:
    """A mechanical change that removes the pitfall.

    `safe` fixes keep the program's behaviour apart from the pitfall itself; unsafe ones change
    what the program does (say, loading weights a different way) and need a human look.
    """

    description: str
    edits: tuple[Edit, ...] = ()
    safe: bool = True


@dataclass(frozen=True)
class Finding:
    """One pitfall at one place.

    `hint` is the one-line advice shown under the code frame; `count` is how many times a
    runtime monitor saw the same code at the same place.
    """

    code: str
    name: str
    message: str
    location: Location
    severity: Severity = Severity.ERROR
    source: Source = Source.STATIC
    hint: str | None = None
    fix: Fix | None = None
    count: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def path(self) -> str:
        return self.location.path

    @property
    def line(self) -> int:
        return self.location.line

    @property
    def column(self) -> int:
        return self.location.column

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.column, self.code)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the fields of the finding (1-based line and column)."""
        location = self.location
        return {
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "path": location.path,
            "line": location.line,
            "column": location.column,
            "end_line": location.end_line,
            "end_column": location.end_column,
            "severity": self.severity.value,
            "source": self.source.value,
            "hint": self.hint,
            "fix": None if self.fix is None else asdict(self.fix),
            "count": self.count,
            **({"extra": self.extra} if self.extra else {}),
        }
