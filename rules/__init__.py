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
    return [
        *gradients.RUNTIME_MONITORS,
        *devices.RUNTIME_MONITORS,
        *eval_mode.RUNTIME_MONITORS,
        *shapes.RUNTIME_MONITORS,
        *learning_rate.RUNTIME_MONITORS,
    ]
