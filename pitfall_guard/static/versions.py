"""Which torch a checked file is written for: a setting, the project's own pins, or what is
installed, the way ruff takes `target-version` from `requires-python`.

A pin gives the lowest version the project supports (`torch>=1.13` is 1.13, `torch==2.3.1`
is 2.3): a message must be true there. torch is never imported: installed versions come from
the distributions' metadata.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

Version = tuple[int, int]

# torchvision 0.(N+1) goes with torch 1.N, and 0.(15+N) with torch 2.N.
_TORCHVISION_FOR_TORCH_1 = 1
_TORCHVISION_FOR_TORCH_2 = 15

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>torchvision|torch)\b\s*(\[[^\]]*\])?\s*(?P<spec>[^;#]*)", re.IGNORECASE
)
_CLAUSE = re.compile(r"(?P<op>==|>=|~=|>|<=|<|!=)\s*(?P<version>\d+(?:\.\d+)*)")
_FILE_SETTING = re.compile(r"#\s*pitfall-guard:\s*torch-version\s*=\s*(\d+(?:\.\d+)?)")
_REQUIREMENTS_FILES = ("requirements*.txt", "requirements/**/*.txt", "environment*.yml")


def parse_version(text: str) -> Version | None:
    """`(2, 6)` for "2.6", "2.6.0+cu121" or "2"; None for anything else."""
    match = re.match(r"\s*v?(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def format_version(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class TorchTarget:
    """The torch (and torchvision) a file is checked for, and where that came from.

    `pinned` is True when the project said it (a setting or its pins): then the version is
    the lowest it supports. Otherwise the version is only what this environment has
    installed, and the project may well run on others.
    """

    torch: Version | None = None
    torchvision: Version | None = None
    source: str = "no torch version was found"
    pinned: bool = False

    def torch_at_least(self, version: Version) -> bool | None:
        """Whether the target torch is `version` or newer; None when it is not known."""
        return None if self.torch is None else self.torch >= version

    def torchvision_version(self) -> Version | None:
        if self.torchvision is not None:
            return self.torchvision
        if self.torch is None:
            return None
        major, minor = self.torch
        if major == 1:
            return 0, minor + _TORCHVISION_FOR_TORCH_1
        if major == 2:
            return 0, minor + _TORCHVISION_FOR_TORCH_2
        return None


UNKNOWN = TorchTarget()


def from_setting(text: str, where: str) -> TorchTarget:
    version = parse_version(text)
    if version is None:
        raise ValueError(f"torch-version must look like '2.6', got {text!r}")
    return TorchTarget(torch=version, source=f"torch-version = {text!r} in {where}", pinned=True)


def file_setting(source: str) -> TorchTarget | None:
    """A `# pitfall-guard: torch-version=2.5` comment in the file itself."""
    match = _FILE_SETTING.search(source)
    if match is None:
        return None
    version = parse_version(match.group(1))
    return TorchTarget(torch=version, source="the file's torch-version comment", pinned=True)


def lowest_supported(spec: str) -> Version | None:
    """The lowest version a requirement's specifier allows (`>=1.8,<3` is 1.8); None if open."""
    lows = [
        parse_version(match.group("version"))
        for match in _CLAUSE.finditer(spec)
        if match.group("op") in ("==", ">=", "~=", ">")
    ]
    known = [low for low in lows if low is not None]
    return min(known) if known else None


def pins_in_requirements(lines: list[str]) -> dict[str, Version]:
    """torch/torchvision lower bounds in requirement lines (pip or conda style)."""
    pins: dict[str, Version] = {}
    for line in lines:
        line = line.strip().lstrip("-").strip()
        match = _REQUIREMENT.match(line)
        if match is None:
            continue
        rest = match.group("spec").strip()
        # conda's `torch=2.1` and a following name (`torchaudio`) are not pins of torch.
        if rest[:1].isalpha() or rest[:1] in ("-", "_"):
            continue
        rest = re.sub(r"^=(?!=)", "==", rest)
        low = lowest_supported(rest)
        if low is not None:
            pins.setdefault(match.group("name").lower(), low)
    return pins


def _pyproject_requirements(table: dict[str, Any]) -> list[str]:
    project = table.get("project", {})
    lines = [str(item) for item in project.get("dependencies", []) or []]
    for group in (project.get("optional-dependencies", {}) or {}).values():
        lines.extend(str(item) for item in group or [])
    poetry = table.get("tool", {}).get("poetry", {}).get("dependencies", {}) or {}
    for name, spec in poetry.items():
        if isinstance(spec, dict):
            spec = spec.get("version", "")
        lines.append(f"{name}{_poetry_spec(str(spec))}")
    return lines


def _poetry_spec(spec: str) -> str:
    spec = spec.strip()
    if spec.startswith(("^", "~")):
        return ">=" + spec[1:]
    return spec if spec[:1] in "<>=!~" else f"=={spec}" if spec else ""


@functools.lru_cache(maxsize=512)
def _pins_in_directory(directory: Path) -> tuple[dict[str, Version], str] | None:
    """The torch pins a directory's project files declare, and which file said so."""
    candidates: list[tuple[Path, list[str]]] = []
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        try:
            table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            table = {}
        candidates.append((pyproject, _pyproject_requirements(table)))
    for pattern in _REQUIREMENTS_FILES:
        for path in sorted(directory.glob(pattern)):
            try:
                candidates.append((path, path.read_text(encoding="utf-8").splitlines()))
            except (OSError, UnicodeDecodeError):
                continue
    # Several files (base, extras, docs, typing): the lowest pin is what the project supports.
    lowest: dict[str, tuple[Version, str]] = {}
    for path, lines in candidates:
        for name, version in pins_in_requirements(lines).items():
            if name not in lowest or version < lowest[name][0]:
                lowest[name] = (version, path.relative_to(directory).as_posix())
    if not lowest:
        return None
    source = (lowest.get("torch") or lowest["torchvision"])[1]
    return {name: version for name, (version, _) in lowest.items()}, source


def _stops_the_search(directory: Path) -> bool:
    """A repository's root, or an installed package's folder: the project's pins are at or
    below it (a package in `site-packages` is not part of the project around the venv)."""
    return (directory / ".git").exists() or directory.name in _INSTALL_FOLDERS


_INSTALL_FOLDERS = ("site-packages", "dist-packages")


@functools.lru_cache(maxsize=1)
def installed() -> TorchTarget:
    """What this environment has installed, from the distributions' metadata."""
    versions: dict[str, Version | None] = {}
    for name in ("torch", "torchvision"):
        try:
            versions[name] = parse_version(metadata.version(name))
        except metadata.PackageNotFoundError:
            versions[name] = None
    torch = versions["torch"]
    if torch is None:
        return UNKNOWN
    return TorchTarget(
        torch=torch,
        torchvision=versions["torchvision"],
        source=f"the installed torch {format_version(torch)} (the project pins none)",
        pinned=False,
    )


def target_for(path: Path) -> TorchTarget:
    """The torch the file at `path` is written for: its project's pins, else what is installed.

    The search goes up from the file's directory to the repository root (or the filesystem
    root) and stops at the first directory whose pyproject.toml or requirements files pin
    torch or torchvision.
    """
    directory = path.resolve().parent
    for candidate in (directory, *directory.parents):
        found = _pins_in_directory(candidate)
        if found is not None:
            pins, file_name = found
            torch = pins.get("torch")
            what = f"torch>={format_version(torch)}" if torch else "torchvision"
            return TorchTarget(
                torch=torch,
                torchvision=pins.get("torchvision"),
                source=f"{file_name} pins {what}",
                pinned=True,
            )
        if _stops_the_search(candidate):
            break
    return installed()
