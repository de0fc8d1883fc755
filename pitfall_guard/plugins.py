"""The plugin manager: the core reporters, then every pack of the entry-point group."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pluggy

from pitfall_guard import hookspecs
from pitfall_guard.config import Config
from pitfall_guard.findings import Maturity
from pitfall_guard.report import builtin as builtin_reporters
from pitfall_guard.report.base import Reporter
from pitfall_guard.runtime.monitor import RuntimeMonitor
from pitfall_guard.static.engine import INTERNAL_ERROR, SYNTAX_ERROR
from pitfall_guard.static.rule import StaticRule

ENTRY_POINT_GROUP = "pitfall_guard.plugins"
NOTHING_WATCHED = ("PG003", "nothing-watched")


class PluginError(Exception):
    """A plugin broke the contract (say, two rules claim the same code)."""


@dataclass(frozen=True)
class CodeInfo:
    """What the CLI knows about one code: its name, summary, docs and where it is checked."""

    code: str
    name: str
    summary: str
    doc: str
    static: type[StaticRule] | None = None
    runtime: type[RuntimeMonitor] | None = None

    @property
    def preview(self) -> bool:
        """Whether `check` leaves this code out of the default selection."""
        return self.static is not None and self.static.maturity is Maturity.PREVIEW


_CORE_CODES = (
    CodeInfo(
        SYNTAX_ERROR[0],
        SYNTAX_ERROR[1],
        "the file does not parse; it is reported and the other files are still checked",
        """## What it catches
A file that Python cannot parse.

## Why it matters
Nothing in the file can be checked, and the script would not run either.

## Example
```python
for epoch in range(3)
    train()
```

## Fix
Fix the syntax error at the reported line; `python -m py_compile FILE` shows it too.
""",
    ),
    CodeInfo(
        INTERNAL_ERROR[0],
        INTERNAL_ERROR[1],
        "a rule or monitor crashed; it is named, and the others still report",
        """## What it catches
A bug in pitfall-guard or in a plugin: a rule raised an exception on this file.

## Why it matters
That rule could not check the file, so a pitfall may have been missed. The other rules
still ran and their findings are complete.

## Example
Any file; the message names the rule and the exception.

## Fix
Report it with the file (or a small excerpt) to the rule's authors. Meanwhile
`--ignore` the rule or add `# noqa: PG002` to silence it.
""",
    ),
    CodeInfo(
        NOTHING_WATCHED[0],
        NOTHING_WATCHED[1],
        "`run` saw no forward pass and no optimizer step: nothing was checked",
        """## What it catches
A script run under `pitfall-guard run` that ended without running any `nn.Module` forward
pass or optimizer step in the guarded process.

## Why it matters
No runtime check could see anything, so "no findings" would mean nothing. The usual causes:
the wrong script (a launcher, a data preparation step), training that runs in processes the
script spawns (`torch.multiprocessing`, Hogwild), or an entry point that is never called.

## Example
`pitfall-guard run prepare_data.py`

## Fix
Run the script that trains, or test the training function under the guard (the pytest
plugin's `pitfall_guard` fixture) inside the worker.
""",
    ),
)


class Plugins:
    """The registered plugins and what they provide."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self.static_rules: list[type[StaticRule]] = [
            rule for rules in manager.hook.pitfall_guard_static_rules() for rule in rules
        ]
        self.runtime_monitors: list[type[RuntimeMonitor]] = [
            monitor
            for monitors in manager.hook.pitfall_guard_runtime_monitors()
            for monitor in monitors
        ]
        self.reporters: dict[str, type[Reporter]] = {}
        for provided in reversed(manager.hook.pitfall_guard_reporters()):
            self.reporters.update(provided)
        self.codes = self._index_codes()

    def _index_codes(self) -> dict[str, CodeInfo]:
        codes = {info.code: info for info in _CORE_CODES}
        for rule in self.static_rules:
            if rule.code in codes:
                raise PluginError(_conflict(rule, codes[rule.code]))
            codes[rule.code] = CodeInfo(rule.code, rule.name, rule.summary, _doc(rule), rule)
        for monitor in self.runtime_monitors:
            known = codes.get(monitor.code)
            if known is None:
                codes[monitor.code] = CodeInfo(
                    monitor.code, monitor.name, monitor.summary, _doc(monitor), runtime=monitor
                )
            elif known.static is not None and known.runtime is None and known.name == monitor.name:
                # The static rule and the runtime monitor of one pitfall share its code.
                codes[monitor.code] = dataclasses.replace(known, runtime=monitor)
            else:
                raise PluginError(_conflict(monitor, known))
        return dict(sorted(codes.items()))

    def is_preview(self, code: str) -> bool:
        info = self.codes.get(code)
        return info is not None and info.preview

    def enabled_static_rules(
        self, config: Config, path: Path | None = None
    ) -> list[type[StaticRule]]:
        """The static rules `config` selects (for `path`: with its per-file ignores)."""
        return [
            rule
            for rule in self.static_rules
            if config.is_enabled(rule.code, path, preview=rule.maturity is Maturity.PREVIEW)
        ]

    def plugin_names(self) -> list[str]:
        return sorted(
            name for name, plugin in self.manager.list_name_plugin() if plugin is not None
        )


def _conflict(owner: type, known: CodeInfo) -> str:
    return (
        f"{owner.__module__}.{owner.__qualname__} claims code {known.code}, "
        f"which is already taken by {known.name}"
    )


def _doc(owner: type) -> str:
    return inspect.cleandoc(owner.__doc__ or "")


def create_plugin_manager(disabled: Iterable[str] = ()) -> pluggy.PluginManager:
    """Core reporters plus every plugin of the entry-point group, minus `disabled` names."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for name in disabled:
        manager.set_blocked(name)
    if not manager.is_blocked("reporters"):
        manager.register(builtin_reporters, name="reporters")
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return manager


@functools.cache
def load_plugins(disabled: tuple[str, ...] = ()) -> Plugins:
    """The plugins of this environment (cached: entry points do not change during a run)."""
    return Plugins(create_plugin_manager(disabled))
