"""Which files a check looks at: the paths given, directories walked, excludes applied."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

# Directories never worth walking into when they turn up below a given directory.
DEFAULT_EXCLUDED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "build",
        "dist",
        "node_modules",
        "site-packages",
        ".eggs",
    }
)


class PathNotFoundError(Exception):
    """A path given on the command line matches no file."""


def matches_any(path: Path, patterns: Sequence[str], root: Path) -> bool:
    """Whether `path` matches a glob in `patterns`, read relative to `root` or by its name."""
    if not patterns:
        return False
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        relative = path.as_posix()
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(path.name, pattern):
            return True
        if fnmatch.fnmatchcase(relative, pattern + "/*"):
            return True
    return False


def discover(paths: Iterable[str], exclude: Sequence[str], root: Path) -> list[Path]:
    """The .py files to check, sorted and without duplicates.

    A file named explicitly is always checked; files found by walking a directory (or by a
    glob) are skipped when they match `exclude` or sit in a directory such as `.venv`.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        for path in _expand(raw):
            if path.is_dir():
                for file in _walk(path, exclude, root):
                    found.setdefault(file, None)
            elif path.is_file():
                if glob.has_magic(raw) and matches_any(path, exclude, root):
                    continue
                found.setdefault(path, None)
            else:
                raise PathNotFoundError(f"{raw}: no such file or directory")
    return sorted(found)


def _expand(raw: str) -> list[Path]:
    if glob.has_magic(raw):
        matches = sorted(glob.glob(raw, recursive=True))
        if not matches:
            raise PathNotFoundError(f"{raw}: the pattern matches no file")
        return [Path(match) for match in matches]
    return [Path(raw)]


def _walk(directory: Path, exclude: Sequence[str], root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(directory):
        current = Path(dirpath)
        dirnames[:] = sorted(
            name
            for name in dirnames
            if name not in DEFAULT_EXCLUDED_DIRS
            and not name.endswith(".egg-info")
            and not matches_any(current / name, exclude, root)
        )
        for name in sorted(filenames):
            file = current / name
            if name.endswith(".py") and not matches_any(file, exclude, root):
                yield file
