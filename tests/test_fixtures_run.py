"""Every fixture marked `# fixture: runnable` runs to its end, in-process, on CPU.

A fixture's command line comes from its `# fixture-args:` line (shell-like). A fixture whose
injected bug raises says so: `# fixture: runnable, raises RuntimeError`, and must raise that.
Each one runs in a temporary folder, so the checkpoints it writes land there.
"""

from __future__ import annotations

import builtins
import re
import runpy
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"

_FIXTURE_LINE = re.compile(r"^#\s*fixture:(?P<rest>.*)$", re.MULTILINE)
_RUNNABLE = re.compile(r"\s*runnable(?:\s*,\s*raises\s+(?P<error>[A-Za-z_]\w*))?\s*")
_ARGS_LINE = re.compile(r"^#\s*fixture-args:(?P<args>.*)$", re.MULTILINE)
_DISTRIBUTED_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RunSpec:
    """How to run one fixture: its path, its argv after the script, what it must raise."""

    path: Path
    args: tuple[str, ...]
    raises: type[Exception] | None


def exception_named(name: str) -> type[Exception]:
    error = getattr(builtins, name, None)
    if not (isinstance(error, type) and issubclass(error, Exception)):
        raise ValueError(f"'raises {name}' does not name a built-in exception")
    return error


def run_spec(path: Path) -> RunSpec | None:
    """The fixture's run specification, or None when it is not marked runnable."""
    source = path.read_text()
    fixture_lines = _FIXTURE_LINE.findall(source)
    args_lines = _ARGS_LINE.findall(source)
    if len(fixture_lines) > 1 or len(args_lines) > 1:
        raise ValueError(f"{path}: at most one '# fixture:' and one '# fixture-args:' line")
    if not fixture_lines:
        if args_lines:
            raise ValueError(f"{path}: '# fixture-args:' without '# fixture: runnable'")
        return None
    match = _RUNNABLE.fullmatch(fixture_lines[0])
    if match is None:
        raise ValueError(f"{path}: cannot read '# fixture:{fixture_lines[0]}'")
    error = match.group("error")
    args = tuple(shlex.split(args_lines[0])) if args_lines else ()
    return RunSpec(path, args, exception_named(error) if error else None)


def runnable_fixtures() -> list[RunSpec]:
    specs = (run_spec(path) for path in sorted(FIXTURES.rglob("*.py")))
    return [spec for spec in specs if spec is not None]


RUNNABLE = runnable_fixtures()


@pytest.fixture
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_runnable_markers_are_well_formed() -> None:
    assert RUNNABLE, "no fixture is marked '# fixture: runnable'"
    for spec in RUNNABLE:
        assert spec.path.read_text().startswith('"""'), f"{spec.path} has no docstring first"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "spec", RUNNABLE, ids=lambda spec: spec.path.relative_to(FIXTURES).as_posix()
)
def test_runnable_fixture_runs(
    spec: RunSpec, one_thread: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(spec.path), *spec.args])
    for name in _DISTRIBUTED_ENV:  # a fixture run is always a single process
        monkeypatch.delenv(name, raising=False)
    if spec.raises is None:
        runpy.run_path(str(spec.path), run_name="__main__")
        return
    with pytest.raises(spec.raises):
        runpy.run_path(str(spec.path), run_name="__main__")
