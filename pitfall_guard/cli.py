"""`pitfall-guard check | run | rule | rules`: the command line."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pitfall_guard import __version__
from pitfall_guard.config import Config, ConfigError, load_config
from pitfall_guard.findings import Finding, Location, Maturity, Severity, Source
from pitfall_guard.plugins import NOTHING_WATCHED, CodeInfo, PluginError, Plugins, load_plugins
from pitfall_guard.report.base import RunSummary, use_color
from pitfall_guard.static.discovery import PathNotFoundError, discover
from pitfall_guard.static.engine import check_files
from pitfall_guard.static.rule import StaticRule

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
# `run`: the script raised (Python itself would exit 1, which means findings here), or was
# interrupted with Ctrl-C (as a shell reports SIGINT). sys.exit(N) keeps its own N.
EXIT_CRASH, EXIT_INTERRUPTED = 3, 130


class UsageError(Exception):
    """A problem with what the user asked for; reported on stderr with exit code 2."""


def _codes(value: str) -> list[str]:
    return [code.strip().upper() for code in value.split(",") if code.strip()]


def build_parser(output_formats: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pitfall-guard",
        description="Find the mistakes that make PyTorch training silently wrong.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="lint files without running them",
        description="Read training scripts (never running them) and report their pitfalls.",
    )
    check.add_argument("paths", nargs="*", default=["."], help="files, directories or globs")
    check.add_argument("--select", type=_codes, help="codes or prefixes to check (replaces)")
    check.add_argument("--extend-select", type=_codes, default=[], help="codes to add")
    check.add_argument("--ignore", type=_codes, default=[], help="codes or prefixes to skip")
    check.add_argument("--output-format", choices=output_formats, default="full")
    check.add_argument("--exit-zero", action="store_true", help="exit 0 even with findings")
    check.add_argument("--statistics", action="store_true", help="count findings per code")
    check.add_argument(
        "--preview",
        action="store_true",
        help="also run the preview rules that the selection matches (see `rules`)",
    )
    check.add_argument(
        "--torch-version",
        metavar="X.Y",
        help="the lowest torch the code must be right for (default: the project's pins, "
        "else the installed torch)",
    )
    check.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="processes to check files with (default: one per core)",
    )
    _add_common(check)

    _add_run_parser(commands, output_formats)

    rule = commands.add_parser("rule", help="explain one rule", description="Explain a rule.")
    rule.add_argument("code", help="a code such as PG101, or a rule name")
    _add_common(rule)

    rules = commands.add_parser("rules", help="list every rule", description="List the rules.")
    rules.add_argument("--output-format", choices=("text", "json"), default="text")
    _add_common(rules)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_run_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], output_formats: Sequence[str]
) -> None:
    run = commands.add_parser(
        "run",
        help="run a training script under the runtime guard",
        usage="pitfall-guard run [options] SCRIPT [-- SCRIPT_ARGS ...]",
        description="Run a training script as __main__ under PyTorch's hooks and report the "
        "pitfalls it really hits. Arguments after -- are the script's own.",
    )
    run.add_argument("script", help="the script to run (with -m, a module name)")
    run.add_argument("-m", dest="as_module", action="store_true", help="run SCRIPT like python -m")
    run.add_argument(
        "--max-steps",
        type=_positive_int,
        metavar="N",
        help="a short run that still evaluates: at most N optimizer steps per pass over a "
        "training DataLoader (N in all outside DataLoaders), evaluation passes bounded too",
    )
    run.add_argument(
        "--max-epochs",
        type=_positive_int,
        default=2,
        metavar="E",
        help="with --max-steps: training DataLoaders yield batches for E epochs (default 2), "
        "then nothing, so the code after the epoch loop runs",
    )
    run.add_argument(
        "--max-eval-batches",
        type=_positive_int,
        metavar="M",
        help="with --max-steps: batches per evaluation pass (default N)",
    )
    run.add_argument(
        "--check-every",
        type=_positive_int,
        default=10,
        metavar="K",
        help="read the values kept on the device (losses, update sizes) every K steps",
    )
    run.add_argument("--select", type=_codes, help="codes or prefixes to check (replaces)")
    run.add_argument("--extend-select", type=_codes, default=[], help="codes to add")
    run.add_argument("--ignore", type=_codes, default=[], help="codes or prefixes to skip")
    run.add_argument("--output-format", choices=output_formats, default="full")
    run.add_argument("--exit-zero", action="store_true", help="exit 0 even with findings")
    _add_common(run)


def _split_script_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """`run ... -- ARGS`: what follows `--` belongs to the script, never to pitfall-guard."""
    if argv[:1] == ["run"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="read settings from this pyproject.toml")
    parser.add_argument(
        "--disable-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load this plugin (see `pitfall-guard rules`); may repeat",
    )


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    args_list, script_args = _split_script_args(list(sys.argv[1:] if argv is None else argv))
    try:
        # The plugins decide which output formats exist, so load them before parsing.
        plugins = load_plugins(_disabled_plugins_from(args_list))
        args = build_parser(sorted(plugins.reporters)).parse_args(args_list)
        config = load_config(path=args.config)
        if config.disable_plugins:
            plugins = load_plugins(tuple(sorted({*args.disable_plugin, *config.disable_plugins})))
        if args.command == "check":
            return _check(args, config, plugins, out)
        if args.command == "run":
            return _run(args, config, plugins, out, script_args)
        if args.command == "rule":
            return _explain(args.code, plugins, out)
        return _list_rules(plugins, args.output_format, out)
    except (ConfigError, UsageError, PathNotFoundError, PluginError) as error:
        print(f"pitfall-guard: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _disabled_plugins_from(argv: list[str]) -> tuple[str, ...]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--disable-plugin", action="append", default=[])
    known, _ = parser.parse_known_args(argv)
    return tuple(sorted(known.disable_plugin))


def _check(args: argparse.Namespace, config: Config, plugins: Plugins, out: TextIO) -> int:
    config = config.with_overrides(
        select=args.select,
        extend_select=args.extend_select,
        ignore=args.ignore,
        preview=args.preview,
        torch_version=args.torch_version,
    )
    config.validate_codes(plugins.codes)
    files = discover(args.paths, config.exclude, config.root)
    if not files:
        raise UsageError(f"no Python files found in {' '.join(args.paths)}")
    rules = plugins.enabled_static_rules(config)
    result = check_files(
        files,
        lambda path: _rules_for(path, rules, config, plugins),
        jobs=args.jobs,
        torch=config.torch_version,
    )
    findings = sorted(
        (
            f
            for f in result.findings
            if config.is_enabled(f.code, Path(f.path), preview=plugins.is_preview(f.code))
        ),
        key=Finding.sort_key,
    )
    reporter = plugins.reporters[args.output_format](out, color=use_color(out))
    if args.statistics:
        reporter.statistics(findings)
    else:
        summary = RunSummary(files_checked=result.files_checked, files_skipped=result.files_skipped)
        reporter.report(findings, summary)
    return EXIT_FINDINGS if findings and not args.exit_zero else EXIT_CLEAN


def _run(
    args: argparse.Namespace, config: Config, plugins: Plugins, out: TextIO, script_args: list[str]
) -> int:
    # Imported here: `check` never needs the runtime side (nor torch, which a guard imports).
    from pitfall_guard.runtime.guard import Guard
    from pitfall_guard.runtime.script import print_crash, run_script

    config = config.with_overrides(
        select=args.select, extend_select=args.extend_select, ignore=args.ignore
    )
    if not args.as_module and not Path(args.script).is_file():
        raise UsageError(f"no such script: {args.script}")
    if importlib.util.find_spec("torch") is None:
        raise UsageError(
            "`run` needs PyTorch, which this Python cannot import: "
            "pip install 'pitfall-guard[runtime]' (or torch itself)"
        )
    guard = Guard(
        config=config,
        plugins=plugins,
        max_steps=args.max_steps,
        max_epochs=args.max_epochs,
        max_eval_batches=args.max_eval_batches,
        check_every=args.check_every,
    )
    # A machine-readable report must stay parseable: the script's prints go to stderr then.
    quiet_stdout = args.output_format not in ("full", "concise")
    with contextlib.redirect_stdout(sys.stderr) if quiet_stdout else contextlib.nullcontext():
        result = run_script(args.script, script_args, guard, as_module=args.as_module)
    if result.error is not None:
        sys.stdout.flush()  # the script's own output first, then its traceback
        print_crash(result.error, sys.stderr)
    failure, code = _script_failure(result.error, result.exit_code)
    if not result.reporting:  # rank 0 reports for every rank
        return code if failure else EXIT_FINDINGS if result.findings else EXIT_CLEAN
    findings = list(result.findings)
    watched = result.watched
    if not watched.anything and failure is None:
        findings.append(_nothing_watched(args.script, watched.processes))
    stopped = f"; stopped after --max-steps {args.max_steps}" if result.stopped else ""
    if watched.processes:
        started = "process" if watched.processes == 1 else "processes"
        stopped += (
            f"; {watched.processes} {started} it started ran unwatched (the guard sees this "
            "process only)"
        )
    if watched.cut_passes:
        passes = "pass" if watched.cut_passes == 1 else "passes"
        stopped += f"; --max-steps cut {watched.cut_passes} DataLoader {passes} short"
    print(
        f"pitfall-guard: watched {watched.describe()} of {args.script}{stopped}"
        + (f"; {failure}" if failure else ""),
        file=sys.stderr,
    )
    incomplete = None
    if failure is not None:
        incomplete = f"{failure}, so what it did not run was not checked"
    reporter = plugins.reporters[args.output_format](out, color=use_color(out))
    reporter.report(findings, RunSummary(files_checked=1, incomplete=incomplete))
    if failure is not None:
        return code
    return EXIT_FINDINGS if findings and not args.exit_zero else EXIT_CLEAN


def _script_failure(error: BaseException | None, exit_code: int) -> tuple[str | None, int]:
    """How the script failed, in words, and the exit code that says so: 130 when it was
    interrupted, EXIT_CRASH when it raised, its own status when it called sys.exit(N)."""
    if isinstance(error, KeyboardInterrupt):
        return "the script was interrupted", EXIT_INTERRUPTED
    if error is not None:
        return f"the script crashed ({type(error).__name__})", EXIT_CRASH
    if exit_code != 0:
        return f"the script exited with status {exit_code}", exit_code
    return None, EXIT_CLEAN


def _nothing_watched(script: str, processes: int) -> Finding:
    code, name = NOTHING_WATCHED
    elsewhere = (
        f" (it started {processes} process{'es' if processes != 1 else ''}: what runs there is "
        "not watched)"
        if processes
        else ""
    )
    return Finding(
        code=code,
        name=name,
        message="the script ended without a forward pass of an nn.Module or an optimizer step "
        f"under the guard{elsewhere}: nothing was checked",
        location=Location(script if Path(script).is_file() else "<module>", 1, 1),
        severity=Severity.ERROR,
        source=Source.RUNTIME,
        hint="run the script that trains (training in processes it spawns, such as "
        "torch.multiprocessing workers, is not watched)",
    )


def _rules_for(
    path: Path, rules: list[type[StaticRule]], config: Config, plugins: Plugins
) -> list[type[StaticRule]]:
    if not config.per_file_ignores:
        return rules
    return [rule for rule in plugins.enabled_static_rules(config, path) if rule in rules]


def _find_code(query: str, plugins: Plugins) -> CodeInfo:
    wanted = query.strip()
    for info in plugins.codes.values():
        if wanted.upper() == info.code or wanted.lower() == info.name:
            return info
    raise UsageError(f"unknown rule {query!r}; `pitfall-guard rules` lists every rule")


def _explain(query: str, plugins: Plugins, out: TextIO) -> int:
    info = _find_code(query, plugins)
    sides = [
        side
        for side, present in (("statically", info.static), ("at runtime", info.runtime))
        if present is not None
    ] or ["by the engine itself"]
    out.write(f"# {info.name} ({info.code})\n\n{info.summary}\n\n")
    out.write(f"Checked {' and '.join(sides)}.\n\n")
    if info.static is not None:
        out.write(_selection_note(info.static) + "\n\n")
    out.write(f"{info.doc.strip()}\n")
    if info.static is not None and info.runtime is not None:
        # The static docs lead; the runtime monitor adds what a real run sees.
        seen = _section(inspect.cleandoc(info.runtime.__doc__ or ""), "What it catches")
        if seen:
            out.write(f"\n## At runtime (pitfall-guard run)\n{seen}\n")
    return EXIT_CLEAN


def _selection_note(rule: type[StaticRule]) -> str:
    if rule.maturity is Maturity.PREVIEW:
        return (
            f"Preview: not in the default selection of check ({rule.maturity_reason}). "
            f"Run it with --select {rule.code}, or with --preview."
        )
    return (
        "Stable: in the default selection of check (its findings are right on the triaged "
        "public corpus that bench/corpus.py scores)."
    )


def _section(doc: str, heading: str) -> str:
    """The text under `## heading` in a rule's docs, up to the next heading."""
    _, found, rest = doc.partition(f"## {heading}\n")
    return rest.split("\n## ", 1)[0].strip() if found else ""


def _list_rules(plugins: Plugins, output_format: str, out: TextIO) -> int:
    rows = [
        {
            "code": info.code,
            "name": info.name,
            "static": info.static is not None,
            "runtime": info.runtime is not None,
            "summary": info.summary,
            "maturity": "preview" if info.preview else "stable",
            "plugin": _plugin_of(info),
        }
        for info in plugins.codes.values()
    ]
    if output_format == "json":
        json.dump(rows, out, indent=2)
        out.write("\n")
        return EXIT_CLEAN
    for row in rows:
        sides = ("S" if row["static"] else "-") + ("R" if row["runtime"] else "-")
        mark = "P" if row["maturity"] == "preview" else " "
        out.write(f"{row['code']}  {sides}{mark} {row['name']:<36} {row['summary']}\n")
    out.write(
        "\nS: checked statically (check), R: at runtime (run).\n"
        "P: preview, left out of the default selection of check: select it by its code, or "
        "pass --preview (`pitfall-guard rule CODE` says why).\n"
    )
    return EXIT_CLEAN


def _plugin_of(info: CodeInfo) -> str:
    owner = info.static or info.runtime
    return "core" if owner is None else owner.__module__
