"""The static engine: prefilter, parse once, facts once, all rules in one batched visit."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper

from pitfall_guard.findings import Finding, Location, Severity, Source
from pitfall_guard.static.facts import Facts
from pitfall_guard.static.noqa import apply_noqa, file_is_exempt
from pitfall_guard.static.project import ProjectView, resolve_module
from pitfall_guard.static.rule import FileContext, StaticRule
from pitfall_guard.static.versions import UNKNOWN, TorchTarget, file_setting, target_for
from pitfall_guard.static.walk import VisitorMethod, visits_tokens, walk

SYNTAX_ERROR = ("PG001", "syntax-error")
INTERNAL_ERROR = ("PG002", "internal-error")
# Whether facts follow imports into the project's other files (the speed benchmark turns it
# off to measure what it costs).
PROJECT_WIDE = True


@dataclass
class CheckResult:
    findings: list[Finding] = field(default_factory=list)
    files_checked: int = 0
    # Files that never mention a trigger word ("torch") and that no checked file imports:
    # read, but left out of the analysis, which the summary says.
    files_skipped: int = 0


def check_source(
    source: str,
    path: str,
    rules: Sequence[type[StaticRule]],
    torch: TorchTarget = UNKNOWN,
    file: Path | None = None,
    imported: bool = False,
) -> list[Finding]:
    """All findings of `rules` in one file's text, sorted, noqa applied.

    `torch` is the version the file is written for; a `# pitfall-guard: torch-version=X.Y`
    comment in the file wins over it. `file` is where the text lives on disk (default: `path`
    when it names a file), for following its imports into the project. A file that mentions
    none of the rules' trigger words ("torch") is skipped unheard, unless it is `imported` by
    another checked file: a helper module of the project.
    """
    if not rules or file_is_exempt(source):
        return []
    if not imported and not mentions_triggers(source, rules):
        return []
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        return [_syntax_error(source, path, error)]
    except RecursionError:
        return [_internal_error(path, 1, "the parser", "the file is nested too deeply to parse")]
    if file is None and Path(path).is_file():
        file = Path(path)
    project = ProjectView(file) if PROJECT_WIDE and file is not None else None
    findings = _run_rules(module, source, path, rules, file_setting(source) or torch, project)
    findings = apply_noqa(findings, source.splitlines())
    return sorted(findings, key=Finding.sort_key)


def mentions_triggers(source: str, rules: Sequence[type[StaticRule]]) -> bool:
    return any(word in source for word in {word for rule in rules for word in rule.triggers})


def check_file(
    path: Path,
    rules: Sequence[type[StaticRule]],
    torch: TorchTarget | None = None,
    imported: bool = False,
) -> list[Finding]:
    """One file's findings; without `torch`, the version comes from the file's project."""
    display = path.as_posix()
    try:
        source = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        return [_syntax_error_at(display, 1, 1, f"the file is not valid UTF-8 ({error.reason})")]
    except OSError as error:
        return [_internal_error(display, 1, "the reader", f"cannot read the file: {error}")]
    if not rules:
        return []
    target = torch if torch is not None else target_for(path)
    return check_source(source, display, rules, target, file=path, imported=imported)


def check_files(
    paths: Sequence[Path],
    rules_for: Callable[[Path], Sequence[type[StaticRule]]],
    jobs: int | None = None,
    torch: TorchTarget | None = None,
) -> CheckResult:
    """Check every file with the rules enabled for it (per-file ignores decide per path).

    `torch` (a `torch-version` setting) applies to every file; without it each file is
    checked for the torch its own project pins.

    Parsing dominates the cost, so many files are spread over a process pool (`jobs`
    processes, default one per core); a few files are not worth starting one.
    """
    rules = {path: tuple(rules_for(path)) for path in paths}
    silent, helpers = _screen(rules)
    work = [(path, rules[path], torch, path in helpers) for path in paths]
    jobs = jobs or os.cpu_count() or 1
    skipped = len(silent - helpers)
    result = CheckResult(files_checked=len(work) - skipped, files_skipped=skipped)
    if jobs > 1 and len(work) >= _FILES_PER_WORKER_MIN * 2:
        with ProcessPoolExecutor(max_workers=min(jobs, len(work) // _FILES_PER_WORKER_MIN)) as pool:
            chunks = pool.map(_check_one, work, chunksize=4)
            result.findings = [finding for chunk in chunks for finding in chunk]
    else:
        result.findings = [finding for item in work for finding in _check_one(item)]
    return result


_FILES_PER_WORKER_MIN = 8


def _check_one(
    item: tuple[Path, tuple[type[StaticRule], ...], TorchTarget | None, bool],
) -> list[Finding]:
    path, rules, torch, imported = item
    return check_file(path, rules, torch, imported)


_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+\(?([\w, \t]+)|import[ \t]+([\w., \t]+))",
    re.MULTILINE,
)


def imported_helpers(rules: dict[Path, tuple[type[StaticRule], ...]]) -> set[Path]:
    """The checked files without a trigger word that another checked file imports (a
    `utils.py` of the project that never says "torch"): they are checked all the same."""
    return _screen(rules)[1]


def _screen(rules: dict[Path, tuple[type[StaticRule], ...]]) -> tuple[set[Path], set[Path]]:
    """The files without a trigger word, and those of them another checked file imports."""
    texts: dict[Path, str] = {}
    for path in rules:
        try:
            texts[path] = path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
    silent = {
        path.resolve(): path
        for path, text in texts.items()
        if rules[path] and not mentions_triggers(text, rules[path])
    }
    if not silent or not PROJECT_WIDE:
        return set(silent.values()), set()
    found: set[Path] = set()
    for path, text in texts.items():
        if path.resolve() in silent:
            continue
        for module, level in _imported_modules(text):
            target = resolve_module(path.resolve(), module, level)
            if target is not None and target.resolve() in silent:
                found.add(silent[target.resolve()])
    return set(silent.values()), found


def _imported_modules(text: str) -> Iterator[tuple[str, int]]:
    """The modules a file's import lines name, with their level of leading dots; for
    `from pkg import a, b`, the submodules `pkg.a` and `pkg.b` too."""
    for match in _IMPORT.finditer(text):
        dots, module, names, plain = match.groups()
        if plain is not None:
            for name in plain.split(","):
                yield name.strip().split(" ")[0], 0
            continue
        level = len(dots)
        yield module, level
        for name in names.replace("(", "").split(","):
            name = name.strip().split(" ")[0]
            if name:
                yield f"{module}.{name}" if module else name, level


def _run_rules(
    module: cst.Module,
    source: str,
    path: str,
    rules: Sequence[type[StaticRule]],
    torch: TorchTarget,
    project: ProjectView | None,
) -> list[Finding]:
    try:
        facts = Facts.build(module, source, project, path)
    except RecursionError:
        return [_internal_error(path, 1, "the facts pass", "the file is nested too deeply")]
    except Exception as error:  # reported as PG002, the run goes on
        return [_internal_error(path, 1, "the facts pass", _describe(error))]
    # The parsed module is never handed to anyone else, so libcst's defensive copy is waste.
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    context = FileContext(
        path=path, source=source, module=module, wrapper=wrapper, facts=facts, torch=torch
    )
    instances = []
    findings: list[Finding] = []
    for rule in rules:
        try:
            instances.append(rule(context))
        except Exception as error:
            findings.append(_internal_error(path, 1, f"rule {rule.code}", _describe(error)))
    try:
        _visit(wrapper, instances)
    except RecursionError:
        findings.append(_internal_error(path, 1, "the rule visit", "the file is nested too deeply"))
    for instance in instances:
        findings.extend(instance.findings)
        if instance.error is not None:
            findings.append(
                _internal_error(
                    path, 1, f"rule {instance.code} ({instance.name})", _describe(instance.error)
                )
            )
    return findings


def _visit(wrapper: MetadataWrapper, rules: Sequence[StaticRule]) -> None:
    """One traversal for all rules, with the metadata any of them declared resolved first.

    Rules that only read the facts (`leave_Module`) need no traversal at all; whitespace and
    punctuation are walked only when some rule asks for them.
    """
    methods: dict[str, list[VisitorMethod]] = {}
    for rule in rules:
        for name, method in rule.get_visitors().items():
            methods.setdefault(name, []).append(method)
    with ExitStack() as stack:
        for rule in rules:
            stack.enter_context(rule.resolve(wrapper))
        module = wrapper.module
        if set(methods) <= {"visit_Module", "leave_Module"}:
            for method in (*methods.get("visit_Module", ()), *methods.get("leave_Module", ())):
                method(module)
            return
        walk(module, methods, syntax_only=not any(map(visits_tokens, methods)))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _syntax_error(source: str, path: str, error: cst.ParserSyntaxError) -> Finding:
    # CPython names the real culprit ("expected ':'") where libcst often points a line later.
    try:
        compile(source, path, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as python_error:
        line, column = python_error.lineno or 1, python_error.offset or 1
        return _syntax_error_at(path, line, column, python_error.msg)
    except (ValueError, RecursionError, MemoryError):
        pass
    first_line = str(error.message).strip().splitlines()[0] if error.message else "invalid syntax"
    return _syntax_error_at(path, error.raw_line, error.raw_column + 1, first_line)


def _syntax_error_at(path: str, line: int, column: int, detail: str) -> Finding:
    code, name = SYNTAX_ERROR
    return Finding(
        code=code,
        name=name,
        message=f"the file does not parse, so nothing in it was checked: {detail}",
        location=Location(path, max(line, 1), max(column, 1)),
        severity=Severity.ERROR,
        source=Source.STATIC,
        hint="fix the syntax error (python -m py_compile FILE shows it too)",
    )


def _internal_error(path: str, line: int, component: str, detail: str) -> Finding:
    code, name = INTERNAL_ERROR
    return Finding(
        code=code,
        name=name,
        message=f"{component} crashed on this file ({detail}); other rules still ran",
        location=Location(path, line, 1),
        severity=Severity.ERROR,
        source=Source.STATIC,
        hint="this is a bug in pitfall-guard or in a plugin: please report it with the file",
    )
