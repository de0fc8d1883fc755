"""How fast `check` is: files/s on the shipped fixtures and on installed packages' sources.

    python bench/check_speed.py [PATH ...]   # default: fixtures/ and the installed torchvision

Prints one line per target: files, seconds, files/s, serial and with the process pool, then
what following imports into the project's other files costs: serial seconds with and without
it (best of 3 each) and their ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from pitfall_guard.plugins import load_plugins
from pitfall_guard.static import engine
from pitfall_guard.static.discovery import discover
from pitfall_guard.static.engine import check_files


def default_targets() -> list[Path]:
    targets = [Path(__file__).resolve().parents[1] / "fixtures"]
    spec = importlib.util.find_spec("torchvision")
    if spec is not None and spec.submodule_search_locations:
        targets.append(Path(next(iter(spec.submodule_search_locations))))
    return targets


def measure(target: Path, jobs: int | None) -> tuple[int, int, float]:
    rules = load_plugins().static_rules
    files = discover([str(target)], (), target)
    start = time.perf_counter()
    result = check_files(files, lambda _: rules, jobs=jobs)
    return len(files), len(result.findings), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args()
    for target in args.paths or default_targets():
        for label, jobs in (("serial", 1), ("pool", None)):
            files, findings, seconds = measure(target, jobs)
            print(
                f"{target.name:<14} {label:<6} files={files:<5} findings={findings:<4} "
                f"seconds={seconds:.2f} files_per_s={files / seconds:.1f}"
            )
        print(f"{target.name:<14} project-wide step: {project_wide_overhead(target)}")


def project_wide_overhead(target: Path) -> str:
    """Serial seconds with and without following imports (best of 3, alternating)."""
    best = {True: float("inf"), False: float("inf")}
    try:
        for _ in range(3):
            for enabled in (False, True):
                engine.PROJECT_WIDE = enabled
                best[enabled] = min(best[enabled], measure(target, 1)[2])
    finally:
        engine.PROJECT_WIDE = True
    return (
        f"off={best[False]:.2f}s on={best[True]:.2f}s overhead_ratio={best[True] / best[False]:.3f}"
    )


if __name__ == "__main__":
    main()
