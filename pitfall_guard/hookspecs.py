"""The plugin contract: every hook a pitfall-guard plugin may implement.

A plugin is a module (or object) with functions marked `@hookimpl`, found through the
entry-point group `pitfall_guard.plugins`. The built-in rule pack is registered through that
same group, exactly like a third-party pack:

    [project.entry-points."pitfall_guard.plugins"]
    mypack = "mypack"

Each hook is called once per run; pitfall-guard collects the results of every plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pitfall_guard.report.base import Reporter
    from pitfall_guard.runtime.monitor import RuntimeMonitor
    from pitfall_guard.static.rule import StaticRule

PROJECT_NAME = "pitfall_guard"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def pitfall_guard_static_rules() -> list[type[StaticRule]]:
    """Return the static rule classes this plugin provides.

    Called when a check starts. Each class subclasses
    :class:`pitfall_guard.static.rule.StaticRule` and has a code unique across all plugins.
    Rules are instantiated once per file and visit it together with every other rule.
    """
    raise NotImplementedError


@hookspec
def pitfall_guard_runtime_monitors() -> list[type[RuntimeMonitor]]:
    """Return the runtime monitor classes this plugin provides.

    Called when a :class:`pitfall_guard.Guard` is entered. Each class subclasses
    :class:`pitfall_guard.runtime.monitor.RuntimeMonitor`; the guard instantiates the enabled
    ones, lets each install its hooks, and removes every hook when it exits.
    """
    raise NotImplementedError


@hookspec
def pitfall_guard_reporters() -> dict[str, type[Reporter]]:
    """Return output formats this plugin provides, by the name `--output-format` takes.

    Called when the command line is read. Each class subclasses
    :class:`pitfall_guard.report.base.Reporter`.
    """
    raise NotImplementedError
