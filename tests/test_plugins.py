"""A second rule pack, found the way an installed one is: through its entry point."""

from __future__ import annotations

import io
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitfall_guard.cli import main
from pitfall_guard.plugins import PluginError, Plugins, create_plugin_manager, load_plugins

PACK = '''
import libcst as cst

from pitfall_guard.hookspecs import hookimpl
from pitfall_guard.static.rule import StaticRule


class PrintInLoop(StaticRule):
    """
    ## What it catches
    `print` calls in a training script.

    ## Why it matters
    They slow the loop down.

    ## Example
    print(loss)

    ## Fix
    Use a logger.
    """

    code = "{code}"
    name = "print-call"
    summary = "print() in training code"
    VALID = ("import torch\\nlogger.info(loss)\\n",)
    INVALID = ("import torch\\nprint(loss)  # expect: {code}\\n",)

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Name) and node.func.value == "print":
            self.report(node, "print() in training code")


@hookimpl
def pitfall_guard_static_rules():
    return [PrintInLoop]
'''


def install_pack(site: Path, module: str, code: str) -> None:
    """Write a package and its dist-info, as pip would, into a directory on sys.path."""
    (site / f"{module}.py").write_text(PACK.replace("{code}", code))
    dist_info = site / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""
            [pitfall_guard.plugins]
            {module} = {module}
            """
        )
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    load_plugins.cache_clear()
    yield site
    load_plugins.cache_clear()
    for name in [name for name in sys.modules if name.startswith("extra_pack")]:
        del sys.modules[name]


def test_an_installed_pack_is_found_and_its_rule_runs(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_pack(site, "extra_pack", "XP001")
    plugins = Plugins(create_plugin_manager())
    assert "extra_pack" in plugins.plugin_names() and "builtin" in plugins.plugin_names()
    assert {"XP001", "PG101"} <= set(plugins.codes)

    script = tmp_path / "train.py"
    script.write_text("import torch\nprint('epoch')\n")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert main(["check", "--output-format", "concise", "train.py"], stdout=out) == 1
    assert "train.py:2:1: XP001 print() in training code" in out.getvalue()
    out = io.StringIO()
    assert main(["check", "--disable-plugin", "extra_pack", "train.py"], stdout=out) == 0


def test_a_pack_claiming_a_taken_code_is_refused(site: Path) -> None:
    install_pack(site, "extra_pack_clash", "PG101")
    with pytest.raises(PluginError, match="PG101"):
        Plugins(create_plugin_manager())
