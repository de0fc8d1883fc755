"""Under torchrun every rank runs its own guard; rank 0 reports for all, once, with the ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pitfall_guard.findings import Finding, Location, Source
from pitfall_guard.runtime.distributed import merge_ranks

ROOT = Path(__file__).resolve().parents[2]


def finding(code: str, line: int, count: int = 1) -> Finding:
    return Finding(
        code, "name", "message", Location("train.py", line), source=Source.RUNTIME, count=count
    )


def test_findings_of_all_ranks_merge_by_place_with_their_ranks() -> None:
    merged = merge_ranks([[finding("PG101", 9, 3)], [finding("PG101", 9, 2), finding("PG302", 4)]])
    assert [(f.code, f.line, f.count, f.extra["ranks"]) for f in merged] == [
        ("PG302", 4, 1, [1]),
        ("PG101", 9, 5, [0, 1]),
    ]
    assert merged[1].message == "message [ranks 0, 1]"
    assert merged[0].message == "message [rank 1]"


def torchrun(tmp_path: Path, *guard_args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--standalone", "--no-python", str(Path(sys.executable).with_name("pitfall-guard"))]
    command += ["run", "--output-format", "json", *guard_args]
    # cwd=tmp_path: the repository root on sys.path would shadow the installed package.
    return subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.slow
def test_two_gloo_ranks_on_the_reference_report_nothing(mnist_root: Path, tmp_path: Path) -> None:
    # Bounded by --max-steps: two short epochs on each rank, each with its evaluation.
    training = ["--data-root", str(mnist_root), "--device", "cpu", "--epochs", "2"]
    training += ["--train-subset", "512", "--test-subset", "200"]
    completed = torchrun(
        tmp_path, "--max-steps", "3", "-m", "pitfall_guard.reference_impl.train", "--", *training
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert json.loads(completed.stdout) == []
    assert completed.stderr.count("--max-steps cut 2 DataLoader passes short") == 1  # rank 0


@pytest.mark.slow
def test_two_gloo_ranks_on_a_broken_fixture_report_once_for_both(tmp_path: Path) -> None:
    fixture = ROOT / "fixtures" / "mutants" / "missing_zero_grad.py"
    completed = torchrun(
        tmp_path, str(fixture), "--", "--synthetic", "--epochs", "2", "--max-steps", "2"
    )
    assert completed.returncode != 0
    [reported] = json.loads(completed.stdout)
    assert (reported["code"], reported["line"]) == ("PG101", 87)
    assert reported["extra"]["ranks"] == [0, 1]
    assert reported["count"] == 6  # 3 steps with stale gradients on each of the 2 ranks
    assert reported["message"].endswith("[ranks 0, 1]")
