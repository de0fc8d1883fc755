from __future__ import annotations

import textwrap
from collections.abc import Sequence

import pytest

from pitfall_guard.findings import Finding
from pitfall_guard.plugins import Plugins, load_plugins
from pitfall_guard.static.engine import check_source
from pitfall_guard.static.rule import StaticRule


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    return load_plugins()


def lint(
    source: str,
    rules: Sequence[type[StaticRule]] | None = None,
    path: str = "train.py",
) -> list[Finding]:
    """Findings of `rules` (default: every registered rule) in a dedented snippet."""
    chosen = list(load_plugins().static_rules) if rules is None else list(rules)
    return check_source(textwrap.dedent(source).lstrip("\n"), path, chosen)
