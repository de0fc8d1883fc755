"""Run a script (or a module, like `python -m`) as `__main__` under a guard: `pitfall-guard run`."""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from pitfall_guard.findings import Finding
from pitfall_guard.runtime.attribution import is_library_frame
from pitfall_guard.runtime.guard import Guard, Watched


@dataclass(frozen=True)
class ScriptRun:
    """How a guarded script ended, and what the guard saw."""

    findings: list[Finding]
    watched: Watched
    stopped: bool  # stopped by the guard after max_steps
    error: BaseException | None  # the script crashed with this (KeyboardInterrupt included)
    exit_code: int  # the script's own sys.exit status (0 when it ended or was stopped)
    reporting: bool  # False on the ranks that leave the report to rank 0

    @property
    def steps(self) -> int:
        return self.watched.steps


def run_script(
    target: str, script_args: Sequence[str], guard: Guard, *, as_module: bool = False
) -> ScriptRun:
    """Run `target` as `__main__` with `script_args` as its sys.argv[1:], under `guard`."""
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [target, *script_args]
    # As `python script.py` and `python -m module` do: the script's folder, or the working
    # directory, comes first on sys.path.
    sys.path.insert(0, os.getcwd() if as_module else os.path.dirname(os.path.abspath(target)))
    error: BaseException | None = None
    exit_code = 0
    try:
        with guard:
            if as_module:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                # `__file__` is absolute, as Python makes it for `python script.py`.
                runpy.run_path(os.path.abspath(target), run_name="__main__")
    except SystemExit as exit:
        exit_code = _exit_status(exit.code)
    except BaseException as crash:  # KeyboardInterrupt too: report what was seen until then
        error = crash
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return ScriptRun(
        findings=guard.findings,
        watched=guard.watched,
        stopped=guard.stopped,
        error=error,
        exit_code=exit_code,
        reporting=guard.is_reporting_rank,
    )


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints the message, exits 1
    return 1


def print_crash(error: BaseException, stream: TextIO) -> None:
    """The script's traceback (with the guard's explanations as notes), without the frames of
    pitfall-guard and runpy that ran it."""
    tb = error.__traceback__
    while tb is not None and is_library_frame(tb.tb_frame) and tb.tb_next is not None:
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb, file=stream)
