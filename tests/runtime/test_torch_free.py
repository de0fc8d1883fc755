"""`pitfall-guard check` never imports torch: the plugins' runtime monitors import it lazily,
and checking every fixture (which all import torch) only reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK_IMPORTS = (
    "import pitfall_guard, pitfall_guard.cli, pitfall_guard.plugins, pitfall_guard.pytest_plugin; "
    "pitfall_guard.plugins.load_plugins(); "
    "assert pitfall_guard.Guard.__name__ == 'Guard'; "
    "import io; pitfall_guard.cli.main(['check', {fixtures!r}], stdout=io.StringIO()); "
    "import sys; assert 'torch' not in sys.modules, 'torch was imported'"
).format(fixtures=str(Path(__file__).resolve().parents[2] / "fixtures"))


def test_loading_every_plugin_does_not_import_torch() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
