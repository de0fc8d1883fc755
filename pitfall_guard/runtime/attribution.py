"""Which line of the user's code an event belongs to.

An event is attributed to the innermost stack frame outside torch and pitfall-guard: the
user's file and line. Walking the stack is cheap (a dict lookup per frame, cached per code
object); turning the frame into a file, line and column span is left until a finding is shown.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from types import CodeType, FrameType, TracebackType

from pitfall_guard.findings import Location

# Frames of these packages are never the user's line: the hooks run inside torch, the guard's
# own code, and the machinery that runs a script (runpy, importlib, contextlib decorators).
_LIBRARY_PACKAGES = (
    "torch",
    "torchvision",
    "torchaudio",
    "pitfall_guard",
    "runpy",
    "importlib",
    "contextlib",
)
# ...except the reference training, which ships inside pitfall_guard but is user code.
_USER_PACKAGES = ("pitfall_guard.reference_impl",)

# By identity: equal code objects (the same source in two files) compare equal in CPython.
_is_library_code: dict[int, tuple[CodeType, bool]] = {}


def _in_package(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def is_library_frame(frame: FrameType) -> bool:
    code = frame.f_code
    known = _is_library_code.get(id(code))
    if known is None or known[0] is not code:
        module = str(frame.f_globals.get("__name__", ""))
        library = _in_package(module, _LIBRARY_PACKAGES) and not _in_package(module, _USER_PACKAGES)
        known = _is_library_code[id(code)] = (code, library)  # keeps `code`, so its id stays
    return known[1]


@dataclass(frozen=True)
class Site:
    """A point in the user's code: the code object and the instruction being run."""

    code: CodeType
    instruction: int  # f_lasti: the byte offset of the instruction (a call) in `code`
    line: int

    def location(self) -> Location:
        span = _span(self.code, self.instruction)
        path = display_path(self.code.co_filename)
        if span is None or span[0] != self.line:
            return Location(path=path, line=self.line)
        line, end_line, column, end_column = span
        return Location(path, line, column, end_line, end_column)


def user_frame(skip: int = 1) -> FrameType | None:
    """The innermost frame of the user's code on the current stack, `skip` frames up."""
    frame: FrameType | None = sys._getframe(skip)
    while frame is not None:
        if not is_library_frame(frame):
            return frame
        frame = frame.f_back
    return None


def site_of(frame: FrameType) -> Site:
    return Site(frame.f_code, frame.f_lasti, frame.f_lineno)


def user_site(skip: int = 1) -> Site | None:
    """The user's line that is running now (None when no frame of the stack is the user's)."""
    frame = user_frame(skip + 1)
    return None if frame is None else site_of(frame)


def error_site(error: BaseException) -> Site | None:
    """The innermost user frame of the traceback of `error`: the line that raised."""
    innermost: Site | None = None
    traceback: TracebackType | None = error.__traceback__
    while traceback is not None:
        if not is_library_frame(traceback.tb_frame):
            code = traceback.tb_frame.f_code
            innermost = Site(code, traceback.tb_lasti, traceback.tb_lineno)
        traceback = traceback.tb_next
    return innermost


def display_path(filename: str) -> str:
    """A path relative to the working directory when the file is under it, as `check` shows."""
    if not os.path.isabs(filename):
        return filename
    cwd = os.getcwd()
    if filename.startswith(cwd + os.sep):
        return os.path.relpath(filename, cwd)
    return filename


@functools.lru_cache(maxsize=4096)
def _span(code: CodeType, instruction: int) -> tuple[int, int, int, int] | None:
    """(line, end line, column, end column), 1-based, end column exclusive: the expression of
    the instruction (a call) in `code`, as tracebacks underline it."""
    positions = list(code.co_positions())
    index = instruction // 2  # co_positions has one entry per 2-byte code unit
    if not 0 <= index < len(positions):
        return None
    line, end_line, column, end_column = positions[index]
    if line is None or end_line is None or column is None or end_column is None:
        return None
    return line, end_line, column + 1, end_column + 1
