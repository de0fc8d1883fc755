from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import libcst as cst
import pytest

from pitfall_guard.plugins import load_plugins
from pitfall_guard.static import engine
from pitfall_guard.static.rule import FileContext, StaticRule
from tests.conftest import lint

MISSING_ZERO_GRAD = """
import torch
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    loss_fn(model(x), y).backward()
    opt.step()
"""


class ExplodingRule(StaticRule):
    """Raises on every call, to prove that one broken rule does not stop the others."""

    code = "PG998"
    name = "exploding"
    summary = "always crashes"

    def visit_Call(self, node: cst.Call) -> None:
        raise ValueError("boom")


class EveryForRule(StaticRule):
    """Reports every `for` loop; lets engine tests count visits without real rules."""

    code = "PG997"
    name = "every-for"
    summary = "reports for loops"
    instances: ClassVar[int] = 0

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        EveryForRule.instances += 1

    def visit_For(self, node: cst.For) -> None:
        self.report(node, "a for loop")


def test_reports_the_step_line_with_position() -> None:
    [finding] = lint(MISSING_ZERO_GRAD)
    assert (finding.code, finding.line, finding.column) == ("PG101", 5, 5)
    assert (finding.location.end_line, finding.location.end_column) == (5, 15)
    assert "optimizer 'opt'" in finding.message and "line 3" in finding.message


def test_file_without_torch_is_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(source: str) -> cst.Module:
        raise AssertionError("parsed a file that never mentions the trigger word")

    monkeypatch.setattr(cst, "parse_module", fail)
    assert lint("for x in y:\n    x.backward()\n    opt.step()\n") == []


def test_each_file_is_parsed_once_for_all_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = cst.parse_module

    def counting(source: str) -> cst.Module:
        calls.append(source)
        return real(source)

    monkeypatch.setattr(cst, "parse_module", counting)
    EveryForRule.instances = 0
    findings = lint(MISSING_ZERO_GRAD, [EveryForRule, *lint_rules()])
    assert len(calls) == 1
    assert EveryForRule.instances == 1
    assert sorted(f.code for f in findings) == ["PG101", "PG997"]


def lint_rules() -> list[type[StaticRule]]:
    from pitfall_guard.plugins import load_plugins

    return list(load_plugins().static_rules)


def test_syntax_error_is_a_finding_at_its_line() -> None:
    [finding] = lint("import torch\nfor epoch in range(3)\n    pass\n")
    assert (finding.code, finding.name, finding.line) == ("PG001", "syntax-error", 2)
    assert "does not parse" in finding.message and "expected ':'" in finding.message


def test_a_crashing_rule_is_reported_and_the_others_still_run() -> None:
    findings = lint(MISSING_ZERO_GRAD, [ExplodingRule, *lint_rules()])
    codes = sorted(f.code for f in findings)
    assert codes == ["PG002", "PG101"]
    [internal] = [f for f in findings if f.code == "PG002"]
    assert "PG998" in internal.message and "ValueError: boom" in internal.message


def test_noqa_with_code_blanket_and_other_codes() -> None:
    with_code = MISSING_ZERO_GRAD.replace("opt.step()", "opt.step()  # noqa: PG101")
    blanket = MISSING_ZERO_GRAD.replace("opt.step()", "opt.step()  # noqa")
    other = MISSING_ZERO_GRAD.replace("opt.step()", "opt.step()  # noqa: E501, PG102")
    assert lint(with_code) == []
    assert lint(blanket) == []
    assert [f.code for f in lint(other)] == ["PG101"]


def test_file_level_noqa_skips_the_file() -> None:
    assert lint("# pitfall-guard: noqa\n" + MISSING_ZERO_GRAD) == []


def test_deeply_nested_file_does_not_crash() -> None:
    depth = 60
    body = "".join("    " * i + f"if c{i}:\n" for i in range(depth))
    body += "    " * depth + "opt.step()\n"
    source = "import torch\nfor x in loader:\n    x.backward()\n" + "\n".join(
        "    " + line for line in body.splitlines()
    )
    codes = {f.code for f in lint(source)}
    assert codes <= {"PG101", "PG002"}


def test_undecodable_file_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    path.write_bytes(b"import torch\nname = '\xe9'\n")
    [finding] = engine.check_file(path, lint_rules())
    assert finding.code == "PG001" and "UTF-8" in finding.message


def test_process_pool_gives_the_same_findings_as_one_process(tmp_path: Path) -> None:
    for index in range(20):
        source = MISSING_ZERO_GRAD if index % 3 == 0 else "import torch\n"
        (tmp_path / f"script_{index:02}.py").write_text(source.lstrip())
    files = sorted(tmp_path.glob("*.py"))
    rules = lint_rules()
    serial = engine.check_files(files, lambda _: rules, jobs=1)
    pooled = engine.check_files(files, lambda _: rules, jobs=2)
    assert pooled.findings == serial.findings
    assert pooled.files_checked == serial.files_checked == 20
    assert len(serial.findings) == 7


@pytest.mark.slow
def test_no_internal_errors_on_the_installed_torchvision_sources() -> None:
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchvision is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(root.rglob("*.py"))
    rules = lint_rules()
    result = engine.check_files(files, lambda _: rules)
    internal = [f"{f.path}: {f.message}" for f in result.findings if f.code in ("PG001", "PG002")]
    assert internal == []


class TodoComments(StaticRule):
    """Reports `# TODO` comments: proves that rules asking for comments still get them."""

    code = "PG996"
    name = "todo"
    summary = "todo comments"

    def visit_Comment(self, node: cst.Comment) -> None:
        if "TODO" in node.value:
            self.report(node, "a TODO")


def test_rules_that_visit_comments_still_see_them() -> None:
    findings = lint("import torch\nx = 1  # TODO: train\n", [TodoComments])
    assert [(f.code, f.line) for f in findings] == [("PG996", 2)]


def test_a_helper_without_torch_is_checked_when_another_file_imports_it(tmp_path: Path) -> None:
    helper = "def evaluate(model, loader):\n    return [model(x) for x, _ in loader]\n"
    files = {
        "train.py": "import torch\nfrom .metrics import evaluate\nfrom pkg import tools, other\n",
        "metrics.py": helper,
        "unused.py": helper,
        "pkg/__init__.py": "",
        "pkg/tools.py": helper,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    paths = sorted(tmp_path.rglob("*.py"))
    rules = load_plugins().static_rules
    assert engine.imported_helpers({path: tuple(rules) for path in paths}) == {
        tmp_path / "metrics.py",
        tmp_path / "pkg" / "__init__.py",
        tmp_path / "pkg" / "tools.py",
    }
    result = engine.check_files(paths, lambda path: rules, jobs=1)
    assert {(Path(f.path).name, f.code) for f in result.findings} == {
        ("metrics.py", "PG302"),
        ("tools.py", "PG302"),
    }
