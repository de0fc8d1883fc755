"""`pitfall-guard check` never imports torch: the plugins' runtime monitors import it lazily."""

from __future__ import annotations

import subprocess
import sys

CHECK_IMPORTS = (
    "import pitfall_guard, pitfall_guard.cli, pitfall_guard.plugins, pitfall_guard.pytest_plugin; "
    "pitfall_guard.plugins.load_plugins(); "
    "assert pitfall_guard.Guard.__name__ == 'Guard'; "
    "import sys; assert 'torch' not in sys.modules, 'torch was imported'"
)


def test_loading_every_plugin_does_not_import_torch() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
