"""The built-in rule pack, registered through the `pitfall_guard.plugins` entry point."""

from __future__ import annotations

from pitfall_guard.hookspecs import hookimpl
from pitfall_guard.runtime.monitor import RuntimeMonitor
from pitfall_guard.static.rule import StaticRule

from . import api, devices, distributed, eval_mode, gradients, learning_rate, shapes


@hookimpl
def pitfall_guard_static_rules() -> list[type[StaticRule]]:
    return [
        *gradients.STATIC_RULES,
        *devices.STATIC_RULES,
        *eval_mode.STATIC_RULES,
        *shapes.STATIC_RULES,
        *learning_rate.STATIC_RULES,
        *api.STATIC_RULES,
        *distributed.STATIC_RULES,
    ]


@hookimpl
def pitfall_guard_runtime_monitors() -> list[type[RuntimeMonitor]]:
    # The runtime sections of each family; none imports torch before a guard is entered.
    from . import (
        devices_runtime,
        eval_mode_runtime,
        gradients_runtime,
        learning_rate_runtime,
        shapes_runtime,
    )

    return [
        *gradients_runtime.RUNTIME_MONITORS,
        *devices_runtime.RUNTIME_MONITORS,
        *eval_mode_runtime.RUNTIME_MONITORS,
        *shapes_runtime.RUNTIME_MONITORS,
        *learning_rate_runtime.RUNTIME_MONITORS,
    ]
