"""`pitfall-guard run`: in this process for most cases, one real subprocess at the end."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pitfall_guard.cli import main

TRAIN = """
import sys
import torch
from torch import nn
print("script args:", sys.argv[1:])
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad() if CLEARS else None
print("the script ended")
"""

SHAPE_ERROR = """
import torch
from torch import nn
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(100, 10))
model(torch.randn(2, 1, 8, 8))
"""


@pytest.fixture
def scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "broken.py").write_text(TRAIN.replace("CLEARS", "False"))
    (tmp_path / "clean.py").write_text(TRAIN.replace("CLEARS", "True"))
    (tmp_path / "shapes.py").write_text(SHAPE_ERROR)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "train.py").write_text(TRAIN.replace("CLEARS", "False"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["run", *argv], stdout=out)
    return code, out.getvalue()


def test_findings_are_reported_with_a_code_frame_and_exit_1(
    scripts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run("broken.py")
    assert code == 1
    assert out.splitlines()[0].startswith("broken.py:10:5: PG101 SGD.step() applies gradients")
    assert out.splitlines()[0].endswith("(seen 4 times)")
    assert "10 |     optimizer.step()" in out
    assert "Found 1 finding in 1 file." in out
    captured = capsys.readouterr()
    assert "the script ended" in captured.out
    assert "watched 5 optimizer steps, 5 forward passes of broken.py" in captured.err


def test_a_clean_script_exits_0(scripts: Path) -> None:
    assert run("clean.py") == (0, "All checks passed! (1 file checked)\n")


def test_script_args_follow_the_double_dash_and_max_steps_stops(
    scripts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run("broken.py", "--max-steps", "3", "--output-format", "concise", "--", "20")
    assert code == 1
    assert "(seen 2 times)" in out
    captured = capsys.readouterr()
    assert "script args: ['20']" in captured.err or "script args: ['20']" in captured.out
    assert "the script ended" not in captured.out + captured.err
    assert "stopped after --max-steps 3" in captured.err


def test_json_output_stays_parseable_when_the_script_prints(
    scripts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run("broken.py", "--output-format", "json")
    assert code == 1
    [finding] = json.loads(out)
    assert (finding["code"], finding["line"], finding["count"]) == ("PG101", 10, 4)
    assert finding["source"] == "runtime"
    assert "the script ended" in capsys.readouterr().err


def test_a_crash_is_reported_with_the_findings_and_the_shape_explanation(
    scripts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run("shapes.py", "--output-format", "concise")
    assert code == 3  # a crash, not findings
    assert out.startswith("shapes.py:5:1: PG401 Sequential.2 (Linear(in_features=100, ")
    err = capsys.readouterr().err
    assert 'File "' in err and 'shapes.py", line 5' in err
    assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied" in err
    assert "pitfall-guard: PG401 Sequential.2" in err
    assert "pitfall_guard/runtime" not in err  # the guard's own frames are left out
    assert "the script crashed (RuntimeError)" in err


SCRIPTS = {
    "exits_3.py": "import sys, torch\nmodel = torch.nn.Linear(2, 1)\nmodel(torch.ones(1, 2))\n"
    "sys.exit(3)\n",
    "interrupted.py": "import torch\nmodel = torch.nn.Linear(2, 1)\nmodel(torch.ones(1, 2))\n"
    "raise KeyboardInterrupt\n",
    "missing_module.py": "import torch\nimport no_such_module_here\n",
    "nothing.py": "import torch\nprint(torch.ones(2).sum())\n",
    "inference.py": "import torch\nmodel = torch.nn.Linear(2, 1).eval()\n"
    "with torch.no_grad():\n    model(torch.ones(1, 2))\n",
    "hogwild.py": "import torch, torch.multiprocessing as mp\n"
    "def train(model):\n    model(torch.ones(1, 2))\n"
    "if __name__ == '__main__':\n"
    "    model = torch.nn.Linear(2, 1)\n    model.share_memory()\n"
    "    process = mp.get_context('spawn').Process(target=train, args=(model,))\n"
    "    process.start()\n    process.join()\n",
    "where.py": "import os, torch\nassert os.path.isabs(__file__), __file__\n"
    "torch.nn.Linear(2, 1)(torch.ones(1, 2))\n",
    "swallows.py": "import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(2, 1)\n"
    "optimizer = torch.optim.SGD(model.parameters(), lr=0.01)\n"
    "for step in range(1000):\n"
    "    try:\n"
    "        optimizer.zero_grad()\n"
    "        model(torch.ones(1, 2)).sum().backward()\n"
    "        optimizer.step()\n"
    "    except:\n"
    "        pass\n"
    "print('reached', step)\n",
}


@pytest.mark.parametrize(
    ("script", "expected_code", "verdict", "summary"),
    [
        ("exits_3.py", 3, "the script exited with status 3", "No findings in what ran, but the"),
        ("interrupted.py", 130, "the script was interrupted", "No findings in what ran, but the"),
        (
            "missing_module.py",
            3,
            "0 optimizer steps, 0 forward passes of missing_module.py; the script crashed "
            "(ModuleNotFoundError)",
            "No findings in what ran, but the script crashed (ModuleNotFoundError)",
        ),
        ("nothing.py", 1, "0 optimizer steps, 0 forward passes", "nothing.py:1:1: PG003"),
        ("hogwild.py", 1, "1 process it started ran unwatched", "hogwild.py:1:1: PG003"),
        ("inference.py", 0, "0 optimizer steps, 1 forward pass (1 evaluating)", "All checks"),
        ("where.py", 0, "1 forward pass of where.py", "All checks passed!"),
    ],
)
def test_the_verdict_says_what_was_watched_and_the_exit_code_how_the_script_ended(
    scripts: Path,
    capsys: pytest.CaptureFixture[str],
    script: str,
    expected_code: int,
    verdict: str,
    summary: str,
) -> None:
    (scripts / script).write_text(SCRIPTS[script])
    code, out = run(script, "--output-format", "concise")
    err = capsys.readouterr().err
    assert code == expected_code, (out, err)
    assert verdict in err
    assert out.startswith(summary) or summary in out, out
    if expected_code not in (0, 1):
        assert "All checks passed" not in out


def test_max_steps_stops_a_script_whose_bare_except_swallows_the_stop(
    scripts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (scripts / "swallows.py").write_text(SCRIPTS["swallows.py"])
    code, out = run("swallows.py", "--max-steps", "3", "--output-format", "concise")
    captured = capsys.readouterr()
    assert code == 0, (out, captured)
    assert "reached" not in captured.out
    assert "watched 3 optimizer steps, 3 forward passes of swallows.py; stopped" in captured.err


def test_run_without_torch_says_how_to_install_it(
    scripts: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    assert run("clean.py")[0] == 2
    assert "pip install 'pitfall-guard[runtime]'" in capsys.readouterr().err


def test_a_module_runs_with_dash_m(scripts: Path) -> None:
    code, out = run("-m", "pkg.train", "--select", "PG1", "--output-format", "concise")
    assert code == 1
    assert "pkg/train.py:10:5: PG101" in out


def test_ignore_and_exit_zero(scripts: Path) -> None:
    assert run("broken.py", "--ignore", "PG101")[0] == 0
    assert run("broken.py", "--exit-zero")[0] == 0


def test_usage_errors_exit_2(scripts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("missing.py")[0] == 2
    assert "no such script: missing.py" in capsys.readouterr().err
    assert run("broken.py", "--select", "PG999")[0] == 2


@pytest.mark.slow
def test_the_installed_command_runs_a_script(scripts: Path) -> None:
    command = Path(sys.executable).with_name("pitfall-guard")
    completed = subprocess.run(
        [str(command), "run", "broken.py", "--max-steps", "3", "--output-format", "json"],
        cwd=scripts,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr[-2000:]
    [finding] = json.loads(completed.stdout)
    assert (finding["code"], finding["line"], finding["count"]) == ("PG101", 10, 2)
