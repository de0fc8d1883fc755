"""Each mutant is the clean single-file reference with exactly one pitfall injected: apart from
its docstring and its markers, it differs from the reference in one small place."""

from __future__ import annotations

import ast
import difflib
import re
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFERENCE = FIXTURES / "clean" / "reference_single_file.py"
_MARKER = re.compile(r"\s*# expect(-runtime)?:.*$")


def code_lines(path: Path) -> list[str]:
    """The lines after the module docstring, without `# expect` markers or indentation (so
    that removing a `with` block's header counts as one line)."""
    source = path.read_text()
    docstring = ast.parse(source).body[0]
    lines = source.splitlines()[docstring.end_lineno or 0 :]
    return [_MARKER.sub("", line).strip() for line in lines]


@pytest.mark.parametrize(
    "mutant", sorted((FIXTURES / "mutants").glob("*.py")), ids=lambda path: path.stem
)
def test_a_mutant_changes_one_small_place(mutant: Path) -> None:
    matcher = difflib.SequenceMatcher(a=code_lines(REFERENCE), b=code_lines(mutant), autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    changed_lines = sum(max(i2 - i1, j2 - j1) for _, i1, i2, j1, j2 in changes)
    # A moved line is two changes (removed here, added there).
    assert 1 <= len(changes) <= 2, changes
    assert changed_lines <= 4, changes
