"""The base class of every static rule, and the per-file context rules read."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from pitfall_guard.findings import Finding, Fix, Location, Maturity, Severity, Source
from pitfall_guard.static.facts import Facts
from pitfall_guard.static.names import is_test_path
from pitfall_guard.static.versions import UNKNOWN, TorchTarget
from pitfall_guard.static.walk import VisitorMethod


@dataclass
class FileContext:
    """One parsed file: its text, its tree, the shared metadata wrapper, the facts, and the
    torch it is written for."""

    path: str
    source: str
    module: cst.Module
    wrapper: MetadataWrapper
    facts: Facts
    torch: TorchTarget = UNKNOWN

    @property
    def is_test_module(self) -> bool:
        """A test module (see `is_test_path`)."""
        return is_test_path(self.path)

    def position(self, node: cst.CSTNode) -> CodeRange:
        """Where `node` is; the first call computes the positions of the whole file."""
        return self.wrapper.resolve(PositionProvider)[node]

    def line_of(self, node: cst.CSTNode) -> int:
        return self.position(node).start.line


class StaticRule(cst.BatchableCSTVisitor):
    """A libcst rule that visits a file together with every other enabled rule.

    Subclasses set `code`, `name` and `summary`, document themselves in the class docstring
    under the headings *What it catches*, *Why it matters*, *Example* and *Fix*, give `VALID`
    and `INVALID` examples (each reported line of an INVALID example ends with
    `# expect: <code>`), and report findings from `visit_*`/`leave_*` methods.
    """

    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    severity: ClassVar[Severity] = Severity.ERROR
    hint: ClassVar[str | None] = None
    # Preview rules are left out of the default selection; `maturity_reason` says why.
    maturity: ClassVar[Maturity] = Maturity.STABLE
    maturity_reason: ClassVar[str] = ""
    # The file is parsed only when its text contains one of these words.
    triggers: ClassVar[tuple[str, ...]] = ("torch",)
    VALID: ClassVar[tuple[str, ...]] = ()
    INVALID: ClassVar[tuple[str, ...]] = ()
    # Positions are not declared: computing them costs a full pass, so FileContext resolves
    # them on the first report, and a clean file never pays for them.

    def __init__(self, context: FileContext) -> None:
        super().__init__()
        self.context = context
        self.facts = context.facts
        self.findings: list[Finding] = []
        self.error: BaseException | None = None
        self.error_traceback: str | None = None

    def report(
        self,
        node: cst.CSTNode,
        message: str,
        *,
        hint: str | None = None,
        fix: Fix | None = None,
        severity: Severity | None = None,
    ) -> None:
        span = self.context.position(node)
        location = Location(
            path=self.context.path,
            line=span.start.line,
            column=span.start.column + 1,
            end_line=span.end.line,
            end_column=span.end.column + 1,
        )
        self.findings.append(
            Finding(
                code=self.code,
                name=self.name,
                message=message,
                location=location,
                severity=severity or self.severity,
                source=Source.STATIC,
                hint=hint if hint is not None else self.hint,
                fix=fix,
            )
        )

    @classmethod
    @functools.cache
    def _visitor_names(cls) -> tuple[str, ...]:
        return tuple(
            name
            for name in dir(cls)
            if name.startswith(("visit_", "leave_"))
            and not getattr(getattr(cls, name), "_is_no_op", False)
        )

    def get_visitors(self) -> Mapping[str, VisitorMethod]:
        """The rule's visit/leave methods, each guarded so that a crash stops only this rule."""
        return {name: self._guarded(getattr(self, name)) for name in self._visitor_names()}

    def _guarded(self, method: VisitorMethod) -> VisitorMethod:
        def guarded(node: cst.CSTNode) -> None:
            if self.error is not None:
                return
            try:
                method(node)
            except Exception as error:  # one broken rule must not stop the rest
                self.error = error
                self.error_traceback = traceback.format_exc()

        return guarded
