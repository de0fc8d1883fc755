"""Every package of the source tree is in pyproject's explicit package list (or a wheel
silently ships without it, while the editable install in this checkout still works)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {
    "pitfall_guard": "pitfall_guard",
    "rules": "pitfall_guard.rules",
    "reference_impl": "pitfall_guard.reference_impl",
}


def test_every_source_package_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found == listed
