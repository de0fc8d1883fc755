"""Score `pitfall-guard check` against public repositories whose findings were triaged by hand.

Every triage file (the shared `wild-a.json` and this project's `bench/corpus/*.json`) holds one
entry per file: repository, commit, path, the real pitfalls (`labels`, with lines), every wrong
finding (`false_positives`, with the reason) and the debatable ones. Entries for the same file
in several triage files are merged. Each repository is laid out whole at its commit (its .py
files and the files that pin its dependencies, from a bare git snapshot under `--mirror`),
`check --preview` runs on the whole tree, and every finding in a triaged file is matched:

  TP   a label of the same code within 3 lines
  FP   a triaged false positive of that code within 1 line
  DEB  a triaged debatable finding
  new  a finding nobody has triaged yet: read it, then add it to a triage file

It prints per rule TP, FP, DEB, new, precision TP / (TP + FP), the labels found, and whether
the rule is in the default selection; then the precision of the default selection, of every
rule, and the recall of the labels. `--min-precision P` exits 1 when the default selection is
below P, or a stable rule below `--min-rule-precision`.

    python bench/corpus.py --mirror ../.mirror [--verbose] [--codes PG301,PG302]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
SHARED_TRIAGE = PROJECT.parent / "shared" / "corpus" / "wild-a.json"
DEFAULT_TRIAGE = [SHARED_TRIAGE, *sorted((HERE / "corpus").glob("*.json"))]
DEFAULT_MIRROR = PROJECT.parent / ".mirror"
LINE_TOLERANCE = 3
PITFALL_GUARD = str(Path(sys.executable).parent / "pitfall-guard")
# Older triage files name a pitfall by category rather than by code.
CATEGORY_CODES = {
    "zero_grad": "PG101", "missing_zero_grad": "PG101", "zero_grad_order": "PG102",
    "loss_accum_graph": "PG103", "device": "PG201", "device_mismatch": "PG201",
    "numpy_cuda": "PG202", "numpy_grad": "PG203", "hardcoded_cuda": "PG204",
    "eval_mode": "PG301", "missing_eval": "PG301", "no_grad": "PG302",
    "missing_no_grad": "PG302", "train_not_restored": "PG303", "shape": "PG401",
    "loss_broadcast": "PG402", "double_softmax": "PG403", "lr_high": "PG501", "lr_low": "PG501",
    "scheduler_order": "PG503", "pretrained": "PG601", "dataparallel": "PG602",
    "torch_load": "PG603", "forward_direct": "PG604", "set_epoch": "PG701",
}  # fmt: skip

Entry = dict[str, Any]


def label_code(label: dict[str, Any]) -> str | None:
    if label.get("code"):
        return str(label["code"])
    pitfall = str(label.get("category") or label.get("pitfall", ""))
    return pitfall.split(":", 1)[1] if pitfall.startswith("other:") else CATEGORY_CODES.get(pitfall)


def load_triage(paths: Iterable[Path]) -> list[Entry]:
    """The .py entries of every triage file, merged per (repository, commit, path)."""
    merged: dict[tuple[str, str, str], Entry] = {}
    for path in paths:
        for entry in json.loads(path.read_text(encoding="utf-8")):
            if entry.get("converted_from_notebook") or not entry["path"].endswith(".py"):
                continue
            key = (entry["repo"], entry["commit"], entry["path"])
            empty = {"labels": [], "false_positives": [], "debatable": [], "fully_read": False}
            known = merged.setdefault(key, {**entry, **empty})
            for part in ("labels", "false_positives", "debatable"):
                known[part].extend(entry.get(part, []))
            known["fully_read"] = known["fully_read"] or entry.get("fully_read", True)
    return list(merged.values())


def git_dir(mirror: Path, repo: str) -> Path | None:
    base = mirror / repo.replace("/", "+")
    candidates = sorted(base.glob("**/HEAD"), key=lambda p: len(p.parts)) if base.is_dir() else []
    return candidates[0].parent if candidates else None


def lay_out(git: Path, commit: str, destination: Path) -> None:
    """The repository's .py files at `commit`, written under `destination`."""
    names = subprocess.run(
        ["git", "--git-dir", str(git), "ls-tree", "-r", "-z", "--name-only", commit],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in names:
        if not name.endswith(".py") and not _declares_dependencies(name):
            continue
        shown = subprocess.run(
            ["git", "--git-dir", str(git), "show", f"{commit}:{name}"], capture_output=True
        )
        if shown.returncode == 0:
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(shown.stdout)


def _declares_dependencies(name: str) -> bool:
    """The files a project pins torch in, which `check` reads for its torch version."""
    base = name.rsplit("/", 1)[-1]
    return base in ("pyproject.toml", "setup.cfg") or (
        base.endswith(".txt") and "requirements" in name
    )


def run_check(tree: Path, extra: list[str]) -> list[dict[str, Any]]:
    command = [PITFALL_GUARD, "check", "--exit-zero", "--preview", "--output-format", "json"]
    done = subprocess.run([*command, *extra, "."], cwd=tree, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"check failed in {tree}: {done.stderr.strip()[-500:]}")
    findings: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    return findings


@dataclass
class Score:
    counts: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    lines: list[str] = field(default_factory=list)

    def add(self, code: str, what: str) -> None:
        self.counts[code][what] += 1


def _near(triaged: list[dict[str, Any]], code: str, line: int, tolerance: int = 1) -> bool:
    return any(
        t.get("code") == code and abs(int(t.get("line", -99)) - line) <= tolerance for t in triaged
    )


def _label_matches(label: dict[str, Any], code: str, line: int) -> bool:
    if label_code(label) != code or not label.get("line"):
        return False
    lines = [int(label["line"]), *(int(x) for x in label.get("alt_lines", []))]
    return min(abs(line - x) for x in lines) <= LINE_TOLERANCE


def score_file(entry: Entry, findings: list[dict[str, Any]], score: Score, only: set[str]) -> None:
    where = f"{entry['repo']}:{entry['path']}"
    labels = [
        lab for lab in entry["labels"] if label_code(lab) and (not only or label_code(lab) in only)
    ]
    hit: set[int] = set()
    for finding in findings:
        code, line = finding["code"], int(finding["line"])
        if code in ("PG001", "PG002") or (only and code not in only):
            continue
        matches = [i for i, lab in enumerate(labels) if _label_matches(lab, code, line)]
        if matches:
            score.add(code, "TP")
            hit.update(matches)
        elif _near(entry["false_positives"], code, line):
            score.add(code, "FP")
            score.lines.append(f"  FP   {where}:{line} {code}")
        elif _near(entry["debatable"], code, line):
            score.add(code, "DEB")
        else:
            score.add(code, "new")
            score.lines.append(f"  NEW  {where}:{line} {code} {finding['message'][:120]}")
    for i, lab in enumerate(labels):
        code = label_code(lab) or "?"
        score.add(code, "labels")
        if i in hit:
            score.add(code, "found")
        else:
            severity = lab.get("severity", "")
            score.lines.append(f"  MISS {where}:{lab.get('line')} {code} ({severity})")


def preview_codes() -> set[str]:
    listed = subprocess.run(
        [PITFALL_GUARD, "rules", "--output-format", "json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {row["code"] for row in json.loads(listed) if row.get("maturity") == "preview"}


def precision(tp: int, fp: int) -> str:
    return f"{tp / (tp + fp):.2f}" if tp + fp else "  - "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("triage", nargs="*", type=Path, help="triage files (default: all)")
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--codes", default="", help="score these codes only")
    parser.add_argument("--verbose", action="store_true", help="list FP, NEW and missed labels")
    parser.add_argument("--min-precision", type=float, default=0.0)
    parser.add_argument("--min-rule-precision", type=float, default=0.0)
    parser.add_argument("--check-args", default="", help="extra arguments for check")
    args = parser.parse_args(argv)
    only = set(filter(None, args.codes.split(",")))
    entries = load_triage([p for p in (args.triage or DEFAULT_TRIAGE) if p.exists()])
    by_repo: dict[tuple[str, str], list[Entry]] = collections.defaultdict(list)
    for entry in entries:
        by_repo[(entry["repo"], entry["commit"])].append(entry)
    score, missing = Score(), []
    with tempfile.TemporaryDirectory() as scratch:
        for (repo, commit), files in sorted(by_repo.items()):
            git = git_dir(args.mirror, repo)
            if git is None:
                missing.append(repo)
                continue
            tree = Path(scratch) / repo.replace("/", "+")
            lay_out(git, commit, tree)
            per_file = collections.defaultdict(list)
            for finding in run_check(tree, args.check_args.split()):
                per_file[Path(finding["path"]).as_posix().removeprefix("./")].append(finding)
            for entry in files:
                score_file(entry, per_file.get(entry["path"], []), score, only)
    if args.verbose:
        print("\n".join(sorted(score.lines)))
    preview = preview_codes()
    print(f"{len(entries)} triaged files in {len(by_repo) - len(missing)} repositories")
    print("code    TP   FP  DEB  new  precision  labels   selection")
    totals: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    failing = []
    for code in sorted(score.counts):
        c = score.counts[code]
        group = "preview" if code in preview else "default"
        totals[group].update(c)
        totals["all"].update(c)
        rule_precision = c["TP"] / (c["TP"] + c["FP"]) if c["TP"] + c["FP"] else 1.0
        if group == "default" and rule_precision < args.min_rule_precision:
            failing.append(code)
        print(
            f"{code:<6}{c['TP']:>5}{c['FP']:>5}{c['DEB']:>5}{c['new']:>5}"
            f"{precision(c['TP'], c['FP']):>11}  {c['found']:>3}/{c['labels']:<4} {group}"
        )
    for group in ("default", "all"):
        t = totals[group]
        print(
            f"{group + ' selection' if group == 'default' else 'every rule':>18}: precision "
            f"{t['TP']}/{t['TP'] + t['FP']} = {precision(t['TP'], t['FP']).strip()}, debatable "
            f"{t['DEB']}, untriaged {t['new']}, labels found {t['found']}/{t['labels']}"
        )
    if missing:
        print("not in the mirror (fetch them first):", ", ".join(sorted(set(missing))))
    t = totals["default"]
    overall = t["TP"] / (t["TP"] + t["FP"]) if t["TP"] + t["FP"] else 1.0
    return 1 if overall < args.min_precision or failing or missing else 0


if __name__ == "__main__":
    sys.exit(main())
