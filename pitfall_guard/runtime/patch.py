"""Replacing a library attribute while a guard is active, and putting it back."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def replace(owner: Any, name: str, wrapper: Callable[..., Any]) -> Callable[[], None]:
    """Set `owner.name` to `wrapper` (which calls the original: it takes the original's name,
    docs and `__wrapped__`) and return what restores the original."""
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, functools.update_wrapper(wrapper, original))
    return lambda: setattr(owner, name, original)
