from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pitfall_guard.cli import main
from tests.static.test_engine import MISSING_ZERO_GRAD

CLEAN = MISSING_ZERO_GRAD.replace(
    "for x, y in loader:\n", "for x, y in loader:\n    opt.zero_grad()\n"
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "train.py").write_text(MISSING_ZERO_GRAD.lstrip())
    (tmp_path / "clean.py").write_text(CLEAN.lstrip())
    (tmp_path / "notes.py").write_text("print('no deep learning here')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return tmp_path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), stdout=out)
    return code, out.getvalue()


def test_full_output_has_a_code_frame_and_a_hint(project: Path) -> None:
    code, out = run("check", "train.py")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("train.py:5:5: PG101 optimizer 'opt' steps in the loop at line 3")
    assert "5 |     opt.step()" in out
    assert "  |     ^^^^^^^^^^ PG101" in out
    assert "= help: call opt.zero_grad()" in out
    assert "Found 1 finding in 1 file." in out
    assert "\x1b[" not in out  # not a terminal: no colour


def test_clean_files_exit_zero(project: Path) -> None:
    code, out = run("check", "clean.py", "notes.py")
    assert code == 0
    assert "All checks passed! (1 file checked; 1 file without torch skipped)" in out


def test_directory_default_and_concise_format(project: Path) -> None:
    code, out = run("check", "--output-format", "concise")
    assert code == 1
    assert out.splitlines()[0].startswith("train.py:5:5: PG101 optimizer 'opt'")
    assert len(out.splitlines()) == 2


def test_json_output_has_every_field_one_based(project: Path) -> None:
    code, out = run("check", "--output-format", "json", ".")
    assert code == 1
    [finding] = json.loads(out)
    assert finding["code"] == "PG101" and finding["name"] == "gradients-not-cleared"
    assert (finding["path"], finding["line"], finding["column"]) == ("train.py", 5, 5)
    assert finding["end_line"] == 5 and finding["end_column"] == 15
    assert finding["severity"] == "error" and finding["source"] == "static"
    assert finding["fix"] is None and finding["hint"]


def test_select_ignore_and_exit_zero(project: Path) -> None:
    assert run("check", "--ignore", "PG1")[0] == 0
    assert run("check", "--select", "PG001")[0] == 0
    assert run("check", "--select", "PG1", "--ignore", "PG101")[0] == 0
    assert run("check", "--ignore", "PG", "--extend-select", "PG101")[0] == 1
    assert run("check", "--exit-zero")[0] == 0


def test_unknown_code_is_a_usage_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("check", "--select", "PG999")[0] == 2
    assert "unknown rule code or prefix 'PG999'" in capsys.readouterr().err


def test_missing_path_is_a_usage_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("check", "nowhere.py")[0] == 2
    assert "nowhere.py: no such file or directory" in capsys.readouterr().err


def test_bad_option_exits_2(project: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("check", "--output-format", "xml")
    assert exit_info.value.code == 2


def test_statistics(project: Path) -> None:
    code, out = run("check", "--statistics")
    assert code == 1
    assert out.splitlines()[0].split() == ["1", "PG101", "[", "]", "gradients-not-cleared"]


def test_rule_docs_and_rule_list(project: Path) -> None:
    code, out = run("rule", "PG101")
    assert code == 0
    assert out.startswith("# gradients-not-cleared (PG101)")
    for heading in ("What it catches", "Why it matters", "Example", "Fix"):
        assert f"## {heading}" in out
    assert run("rule", "gradients-not-cleared")[1] == out
    assert "## At runtime (pitfall-guard run)" in out
    assert "## At runtime" not in run("rule", "PG603")[1]
    assert run("rule", "PG999")[0] == 2
    code, listing = run("rules")
    assert code == 0 and "PG101  SR  gradients-not-cleared" in listing
    rows = json.loads(run("rules", "--output-format", "json")[1])
    assert {row["code"] for row in rows} >= {"PG001", "PG002", "PG101"}


def test_colour_on_a_terminal_unless_no_color(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    main(["check", "train.py"], stdout=out)
    assert "\x1b[" in out.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    out = Terminal()
    main(["check", "train.py"], stdout=out)
    assert "\x1b[" not in out.getvalue()


def test_config_from_pyproject(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.write_text('[tool.pitfall-guard]\nignore = ["PG101"]\n')
    assert run("check")[0] == 0
    pyproject.write_text('[tool.pitfall-guard]\nper-file-ignores = {"train.py" = ["PG1"]}\n')
    assert run("check")[0] == 0
    pyproject.write_text('[tool.pitfall-guard]\nexclude = ["train.py"]\n')
    assert run("check", ".")[0] == 0
    assert run("check", "train.py")[0] == 1  # a file named explicitly is always checked
    pyproject.write_text('[tool.pitfall-guard]\nselct = ["PG101"]\n')
    assert run("check")[0] == 2
    assert "unknown key 'selct'" in capsys.readouterr().err
    pyproject.write_text('[tool.pitfall-guard]\nignore = ["PG5O1"]\n')
    assert run("check")[0] == 2
    assert "ignore in" in capsys.readouterr().err


def test_disabling_the_builtin_pack_leaves_only_core_codes(project: Path) -> None:
    code, listing = run("rules", "--disable-plugin", "builtin")
    assert code == 0 and "PG101" not in listing and "PG001" in listing
    assert run("check", "--disable-plugin", "builtin", "train.py")[0] == 0


DATA_PARALLEL = "import torch.nn as nn\nmodel = nn.DataParallel(model)\n"
LOAD = "import torch\nstate = torch.load('model.pt')\n"


def test_preview_rules_run_only_when_named_or_with_preview(project: Path) -> None:
    (project / "dp.py").write_text(DATA_PARALLEL)
    assert run("check", "dp.py") == (0, "All checks passed! (1 file checked)\n")
    assert run("check", "dp.py", "--select", "PG6")[0] == 0  # a prefix is not enough
    code, out = run("check", "dp.py", "--select", "PG602", "--output-format", "concise")
    assert code == 1 and "dp.py:2:9: PG602" in out
    assert run("check", "dp.py", "--preview")[0] == 1
    (project / "pyproject.toml").write_text("[tool.pitfall-guard]\npreview = true\n")
    assert run("check", "dp.py")[0] == 1


def test_rules_and_rule_say_which_rules_are_preview(project: Path) -> None:
    _, listing = run("rules")
    row = {line[:5]: line for line in listing.splitlines() if line.startswith("PG")}
    assert (row["PG602"][9], row["PG101"][9]) == ("P", " ")
    _, rows = run("rules", "--output-format", "json")
    maturity = {row["code"]: row["maturity"] for row in json.loads(rows)}
    assert maturity["PG602"] == "preview" and maturity["PG301"] == "stable"
    _, doc = run("rule", "PG602")
    assert "Preview: not in the default selection of check (" in doc
    assert "Stable: in the default selection" in run("rule", "PG101")[1]


def test_torch_version_setting_and_project_pins(project: Path) -> None:
    (project / ".git").mkdir()
    (project / "load.py").write_text(LOAD)
    _, out = run("check", "load.py", "--output-format", "json", "--torch-version", "2.4")
    [finding] = json.loads(out)
    assert (finding["severity"], "torch 2.4 (torch-version = '2.4' in --torch-version)") == (
        "warning",
        finding["message"].split("objects on ", 1)[1].split(":")[0],
    )
    assert run("check", "load.py", "--torch-version", "2.6")[0] == 0
    (project / "requirements.txt").write_text("torch>=2.6,<3\n")
    assert run("check", "load.py")[0] == 0  # the project supports only torch >= 2.6
    (project / "pyproject.toml").write_text('[tool.pitfall-guard]\ntorch-version = "2.0"\n')
    assert run("check", "load.py")[0] == 1  # the setting wins over the pins


def test_bad_torch_version_setting_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "pyproject.toml").write_text('[tool.pitfall-guard]\ntorch-version = "new"\n')
    assert run("check", "train.py")[0] == 2
    assert "torch-version must look like '2.6', got 'new'" in capsys.readouterr().err


def test_files_that_never_mention_torch_are_not_a_pass(project: Path) -> None:
    code, out = run("check", "notes.py")
    assert code == 0
    assert out == "Nothing to check: the file never mentions torch.\n"
