"""Every runnable fixture runs under `pitfall-guard run --max-steps` (in this process), and its
runtime findings match its `# expect-runtime:` markers exactly: nothing missing or extra.

A marker whose code has no runtime monitor yet, or that only a GPU can show (PG201: on a CPU
the batch and the model share the one device), is pending: the rest of the file is still a
hard check, and the test is then marked as an expected failure (not strict). The reference
training has no runtime finding in a complete short run.
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from _pytest.assertion.rewrite import AssertionRewritingHook

from pitfall_guard.cli import main
from pitfall_guard.findings import Finding, Location
from pitfall_guard.plugins import load_plugins
from tests.expectations import actual_findings, describe_mismatch, expected_findings
from tests.test_fixtures_run import _DISTRIBUTED_ENV, FIXTURES, RUNNABLE, RunSpec

GUARD_MAX_STEPS = "50"  # above every fixture's own --max-steps: each runs to its end
NEEDS_GPU = frozenset({"PG201"})


# Findings a fixture does not mark yet, though the run really shows them.
def run_fixture(
    spec: RunSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[Finding]]:
    monkeypatch.chdir(tmp_path)  # checkpoints the fixtures write land there
    for name in _DISTRIBUTED_ENV:
        monkeypatch.delenv(name, raising=False)
    out = io.StringIO()
    argv = ["run", str(spec.path), "--max-steps", GUARD_MAX_STEPS, "--output-format", "json"]
    code = main([*argv, "--", *spec.args], stdout=out)
    return code, [_finding(row) for row in json.loads(out.getvalue())]


def _finding(row: dict[str, object]) -> Finding:
    location = Location(str(row["path"]), int(str(row["line"])))
    return Finding(str(row["code"]), str(row["name"]), str(row["message"]), location)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(
    "spec", RUNNABLE, ids=lambda spec: spec.path.relative_to(FIXTURES).as_posix()
)
def test_runtime_findings_match_expect_runtime_markers(
    spec: RunSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    watched = {monitor.code for monitor in load_plugins().runtime_monitors}
    if not torch.cuda.is_available():
        watched -= NEEDS_GPU
    expected = expected_findings(spec.path.read_text(), marker="expect-runtime")
    pending = Counter({key: n for key, n in expected.items() if key[1] not in watched})
    expected -= pending

    code, findings = run_fixture(spec, tmp_path, monkeypatch)

    actual = actual_findings(findings)
    if spec.raises is not None:
        # A crash exits 3 (not 1, which means findings), and its findings are still printed.
        assert code == 3 and f"{spec.raises.__name__}:" in capsys.readouterr().err
    else:
        assert code == (1 if actual else 0), capsys.readouterr().err[-3000:]
    assert actual == expected, describe_mismatch(expected, actual, findings)
    if pending:
        codes = ", ".join(sorted({code for _, code in pending}))
        pytest.xfail(f"markers this machine cannot check: {codes}")


@pytest.mark.slow
def test_the_reference_training_has_no_runtime_findings(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # pytest claims the modules of its plugins' distributions (pitfall_guard.*) for assertion
    # rewriting, with a loader that runpy cannot run as __main__: load the reference plainly.
    plain_finders = [f for f in sys.meta_path if not isinstance(f, AssertionRewritingHook)]
    monkeypatch.setattr(sys, "meta_path", plain_finders)
    monkeypatch.delitem(sys.modules, "pitfall_guard.reference_impl.train", raising=False)
    out = io.StringIO()
    training = ["--data-root", str(mnist_root), "--device", "cpu", "--epochs", "2"]
    training += ["--train-subset", "640", "--test-subset", "200", "--batch-size", "64"]
    command = ["run", "-m", "pitfall_guard.reference_impl.train", "--output-format", "json"]
    code = main([*command, "--", *training], stdout=out)
    assert json.loads(out.getvalue()) == []
    assert code == 0
