"""The corpus runner's matching of findings to a hand triage (bench/corpus.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corpus", ROOT / "bench" / "corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["corpus"] = module
    spec.loader.exec_module(module)
    return module


def _entry(**parts: object) -> dict[str, object]:
    return {"repo": "o/r", "commit": "c", "path": "a.py", "labels": [], "false_positives": [],
            "debatable": [], **parts}  # fmt: skip


def test_entries_of_one_file_are_merged(tmp_path: Path) -> None:
    corpus = _runner()
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps([_entry(labels=[{"code": "PG101", "line": 3}])]))
    second.write_text(json.dumps([_entry(false_positives=[{"code": "PG204", "line": 9}]),
                                  _entry(path="notebook.ipynb")]))  # fmt: skip
    [merged] = corpus.load_triage([first, second])
    assert (len(merged["labels"]), len(merged["false_positives"])) == (1, 1)


def test_findings_are_matched_to_labels_false_positives_and_nothing() -> None:
    corpus = _runner()
    entry = _entry(
        labels=[{"pitfall": "missing_zero_grad", "line": 10}, {"code": "PG302", "line": 40}],
        false_positives=[{"code": "PG204", "line": 20}],
        debatable=[{"code": "PG603", "line": 30}],
    )
    findings = [
        {"code": "PG101", "line": 12, "message": "m"},  # within 3 lines of its label
        {"code": "PG204", "line": 21, "message": "m"},
        {"code": "PG603", "line": 30, "message": "m"},
        {"code": "PG501", "line": 50, "message": "nobody looked at this"},
        {"code": "PG002", "line": 1, "message": "crashes are not scored"},
    ]
    score = corpus.Score()
    corpus.score_file(entry, findings, score, only=set())
    counts = {code: dict(c) for code, c in score.counts.items()}
    assert counts == {
        "PG101": {"TP": 1, "labels": 1, "found": 1},
        "PG204": {"FP": 1},
        "PG603": {"DEB": 1},
        "PG501": {"new": 1},
        "PG302": {"labels": 1},
    }
    assert any(line.startswith("  MISS o/r:a.py:40 PG302") for line in score.lines)
