"""The torch a file is checked for: settings, the project's pins, the installed metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitfall_guard.findings import Severity
from pitfall_guard.plugins import load_plugins
from pitfall_guard.static import versions
from pitfall_guard.static.engine import check_file, check_source
from pitfall_guard.static.versions import (
    TorchTarget,
    file_setting,
    lowest_supported,
    parse_version,
    pins_in_requirements,
    target_for,
)

LOAD = "import torch\nstate = torch.load('model.pt')\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2.6", (2, 6)), ("2.6.0+cu121", (2, 6)), ("1", (1, 0)), ("v1.13.1", (1, 13)), ("x", None)],
)
def test_parse_version(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (">=1.8,<3", (1, 8)),
        ("==2.3.1", (2, 3)),
        ("~=2.1", (2, 1)),
        ("<3", None),
        ("", None),
        (">2.0, !=2.1.0", (2, 0)),
    ],
)
def test_lowest_supported_is_the_lowest_version_a_pin_allows(
    spec: str, expected: tuple[int, int] | None
) -> None:
    assert lowest_supported(spec) == expected


def test_requirement_lines_pip_and_conda_styles() -> None:
    pins = pins_in_requirements(
        [
            "-r base.txt",
            "numpy>=1.24",
            "torchaudio==2.0.1",
            "torch [cuda] >= 2.2.2 ; python_version > '3.8'  # runtime",
            "torchvision=0.17",
        ]
    )
    assert pins == {"torch": (2, 2), "torchvision": (0, 17)}
    assert pins_in_requirements(["torch"]) == {}  # unpinned: nothing to learn


def test_pins_come_from_the_nearest_project_and_the_lowest_file(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "requirements.txt").write_text("torch>=2.6\n")
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "typing.txt").write_text("torch>=2.9\n")
    (tmp_path / "requirements" / "base.txt").write_text("torch>=2.1\n")
    sub = tmp_path / "examples" / "legacy"
    sub.mkdir(parents=True)
    (sub / "pyproject.toml").write_text('[project]\ndependencies = ["torch==1.13.1"]\n')
    script = sub / "train.py"
    script.write_text(LOAD)
    top = tmp_path / "train.py"
    top.write_text(LOAD)

    assert target_for(script) == TorchTarget(
        torch=(1, 13), source="pyproject.toml pins torch>=1.13", pinned=True
    )
    found = target_for(top)
    assert (found.torch, found.pinned) == ((2, 1), True)
    assert found.source == "requirements/base.txt pins torch>=2.1"


def test_poetry_carets_and_optional_dependencies(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[project]\ndependencies = []\n"
        '[project.optional-dependencies]\nrun = ["torchvision>=0.14"]\n'
        '[tool.poetry.dependencies]\ntorch = "^2.0.1"\n'
    )
    (tmp_path / "train.py").write_text(LOAD)
    found = target_for(tmp_path / "train.py")
    assert (found.torch, found.torchvision) == ((2, 0), (0, 14))


def test_without_pins_the_installed_metadata_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "train.py").write_text(LOAD)
    installed = TorchTarget(torch=(2, 14), source="the installed torch 2.14", pinned=False)
    monkeypatch.setattr(versions, "installed", lambda: installed)
    assert target_for(tmp_path / "train.py") == installed


def test_torchvision_follows_torch_when_not_pinned() -> None:
    assert TorchTarget(torch=(1, 12)).torchvision_version() == (0, 13)
    assert TorchTarget(torch=(2, 6)).torchvision_version() == (0, 21)
    assert TorchTarget().torchvision_version() is None


def test_a_comment_in_the_file_wins() -> None:
    found = file_setting("# pitfall-guard: torch-version=2.4\nimport torch\n")
    assert found is not None and (found.torch, found.pinned) == ((2, 4), True)


def _unsafe_load(torch: TorchTarget) -> list[tuple[Severity, str]]:
    rules = [r for r in load_plugins().static_rules if r.code == "PG603"]
    return [(f.severity, f.message) for f in check_source(LOAD, "train.py", rules, torch)]


def test_torch_load_is_judged_for_the_projects_torch() -> None:
    [(severity, message)] = _unsafe_load(
        TorchTarget(torch=(2, 4), source="requirements.txt pins torch>=2.4", pinned=True)
    )
    assert severity is Severity.WARNING
    assert "unpickles arbitrary objects on torch 2.4 (requirements.txt pins" in message
    # the project supports only torch >= 2.6, where weights_only=True is the default
    assert _unsafe_load(TorchTarget(torch=(2, 6), pinned=True)) == []
    # only installed, not pinned: true on the installed torch, a hint for older ones
    [(severity, message)] = _unsafe_load(
        TorchTarget(torch=(2, 14), source="the installed torch 2.14 (the project pins none)")
    )
    assert severity is Severity.HINT
    assert message.startswith("torch.load without weights_only=True is safe only from torch 2.6")
    # before 1.13 there is no flag to pass
    [(_, message)] = _unsafe_load(TorchTarget(torch=(1, 2), source="pins", pinned=True))
    assert "has no weights_only yet" in message


def test_check_file_reads_the_files_project(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "requirements.txt").write_text("torch>=2.7\n")
    (tmp_path / "train.py").write_text(LOAD)
    assert check_file(tmp_path / "train.py", load_plugins().static_rules) == []


def test_an_installed_package_is_not_part_of_the_project_around_the_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "requirements.txt").write_text("torch>=2.4\n")
    module = tmp_path / ".venv" / "lib" / "site-packages" / "torch" / "utils" / "load.py"
    module.parent.mkdir(parents=True)
    module.write_text(LOAD)
    installed = TorchTarget(torch=(2, 14), source="installed", pinned=False)
    monkeypatch.setattr(versions, "installed", lambda: installed)
    assert target_for(module) == installed
