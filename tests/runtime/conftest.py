"""Helpers for the runtime tests: run a snippet in this process under a guard."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from pitfall_guard.config import Config
from pitfall_guard.runtime.guard import Guard
from tests.reference.conftest import mnist_root

__all__ = ["mnist_root"]  # the reference tests' fixture: MNIST from the shared folder

RAISES = re.compile(r"#\s*raises:\s*(?P<error>\w+)")


def guarded(
    source: str,
    filename: str = "example.py",
    namespace: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[Guard, BaseException | None]:
    """Run a dedented snippet as `__main__` (with `namespace` as its globals) under a fresh
    guard with default settings and every registered monitor; return the guard and the
    exception the snippet raised, if any."""
    code = compile(textwrap.dedent(source), filename, "exec")
    guard = Guard(config=Config(), **options)
    error: BaseException | None = None
    try:
        with guard:
            exec(code, {**(namespace or {}), "__name__": "__main__"})
    except Exception as raised:
        error = raised
    return guard, error


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small models on one thread: faster here than two, and the same on every machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
