"""What the other files of the checked project define, for the file being checked.

`from models import Net` in `train.py` names a class of `models.py`: whether it is an
`nn.Module` and whether it has Dropout/BatchNorm decides what `model.eval()` does for it.
Imported files are found next to the importer (and in its parents up to the repository root,
and their `src/` folders), read with CPython's `ast` (far cheaper than a libcst parse) and
reduced to small summaries, cached per file for the whole run. Nothing is imported or run.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from pathlib import Path

from pitfall_guard.static.torch_api import MODE_DEPENDENT_LAYERS, MODE_DEPENDENT_WITH

_MAX_FILE_BYTES = 2_000_000
_MAX_PARENTS = 3
_MODULE_BASES = ("Module", "LightningModule")


@dataclass(frozen=True)
class ClassSummary:
    """A class of another file: its bases (as that file resolves them) and its layers."""

    name: str
    bases: tuple[str, ...]
    mode_layers: bool


@dataclass(frozen=True)
class FunctionSummary:
    """A top-level function of another file: the methods it calls (`eval`, `zero_grad`,
    `set_epoch`, `to`...), so that a helper's effect counts where it is called."""

    name: str
    methods: frozenset[str]
    # The callees it hands one of its parameters to (`step(model, optimizer)`), builtins aside.
    passes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ModuleSummary:
    """The classes and functions of one file, and what its imported names stand for."""

    path: Path
    classes: dict[str, ClassSummary] = field(default_factory=dict)
    functions: dict[str, FunctionSummary] = field(default_factory=dict)
    imports: dict[str, tuple[str, int]] = field(default_factory=dict)
    # `from .functions import *`: the modules whose names it re-exports.
    stars: list[tuple[str, int]] = field(default_factory=list)


class ProjectView:
    """The project around one checked file: resolves its imports to the files they name."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()

    def module_class(self, origin: str, level: int = 0) -> ClassSummary | None:
        """The class `origin` ("models.Net", or ".models.Net" with `level` dots) names, when a
        file of the project defines it and it is an nn.Module; None otherwise."""
        found = _find_class(self.path, origin, level, depth=3)
        return found[0] if found is not None and found[1] else None

    def function(self, origin: str, level: int = 0) -> FunctionSummary | None:
        """The function `origin` ("utils.evaluate") names in a file of the project."""
        module, _, name = origin.rpartition(".")
        target = resolve_module(self.path, module, level)
        summary = summarize(target) if target is not None else None
        return None if summary is None else summary.functions.get(name)

    def may_call(self, origin: str, level: int, methods: frozenset[str], depth: int = 3) -> bool:
        """Whether the function `origin` names may call one of `methods` (`set_epoch`) on what
        it is handed: it does, or it cannot be read, or it hands its parameters on to a
        function that may (followed through the project's files, else assumed)."""
        module, _, name = origin.rpartition(".")
        target = resolve_module(self.path, module, level)
        summary = summarize(target) if target is not None else None
        return summary is None or _may_call(summary, name, methods, depth)

    def is_plain_class(self, origin: str, level: int = 0) -> bool:
        """Whether `origin` names a class of the project with no base but `object`: its
        methods (a `forward()` of its own) are plain functions, not a module's."""
        found = _find_class(self.path, origin, level, depth=3)
        return found is not None and all(base == "object" for base in found[0].bases)

    def shows_mode_layers(self, origin: str, level: int = 0) -> bool:
        """Whether the imported module class has Dropout/BatchNorm (in it or its bases)."""
        found = _find_class(self.path, origin, level, depth=3)
        return found is not None and found[1] and found[2]


def _may_call(summary: ModuleSummary, name: str, methods: frozenset[str], depth: int) -> bool:
    function = summary.functions.get(name)
    if function is None:
        origin = summary.imports.get(name)  # re-exported by a package's __init__.py
        if origin is None or depth == 0:
            return True
        return ProjectView(summary.path).may_call(*origin, methods, depth - 1)
    if function.methods & methods:
        return True
    for callee in function.passes:
        if depth == 0:
            return True
        if callee in summary.functions:
            if _may_call(summary, callee, methods, depth - 1):
                return True
            continue
        head, _, rest = callee.partition(".")
        origin = summary.imports.get(head)
        if origin is None or rest:
            return True  # a method of some object, or a library function: it may
        if ProjectView(summary.path).may_call(*origin, methods, depth - 1):
            return True
    return False


_Found = tuple[ClassSummary, bool, bool]  # the class, is an nn.Module, has mode layers


def _find_class(importer: Path, origin: str, level: int, depth: int) -> _Found | None:
    module, _, name = origin.rpartition(".")
    target = resolve_module(importer, module, level)
    summary = summarize(target) if target is not None else None
    return None if summary is None else _evaluate(summary, name, depth)


def _evaluate(summary: ModuleSummary, name: str, depth: int) -> _Found | None:
    if depth == 0:
        return None
    if name not in summary.classes:
        # `from package import Net` where package/__init__.py re-exports it.
        origin = summary.imports.get(name)
        if origin is not None:
            return _find_class(summary.path, *origin, depth - 1)
        for module, level in summary.stars:  # `from .functions import *`
            starred = f"{module}.{name}" if module else name
            through = _find_class(summary.path, starred, level, depth - 1)
            if through is not None:
                return through
        return None
    found = summary.classes[name]
    is_module, mode_layers = False, found.mode_layers
    for base in found.bases:
        if base.rpartition(".")[2] in _MODULE_BASES:
            is_module = True
            continue
        inherited = _base_class(summary, base, depth - 1)
        if inherited is not None:
            is_module |= inherited[1]
            mode_layers |= inherited[2]
    return found, is_module, mode_layers


def _base_class(summary: ModuleSummary, base: str, depth: int) -> _Found | None:
    if base in summary.classes:
        return _evaluate(summary, base, depth)
    head, _, rest = base.partition(".")
    origin = summary.imports.get(head)
    if origin is None:
        return None
    full = f"{origin[0]}.{rest}" if rest else origin[0]
    return _find_class(summary.path, full, origin[1], depth)


@functools.lru_cache(maxsize=8192)
def resolve_module(importer: Path, module: str, level: int = 0) -> Path | None:
    """The file `import module` (with `level` leading dots) names, seen from `importer`."""
    parts = [part for part in module.split(".") if part]
    if level:
        base = importer.parent
        for _ in range(level - 1):
            base = base.parent
        return _module_file(base, parts)
    directory = importer.parent
    for _ in range(_MAX_PARENTS + 1):
        for root in (directory, directory / "src"):
            found = _module_file(root, parts)
            if found is not None and found != importer:
                return found
        if (
            (directory / ".git").exists()
            or directory.name in ("site-packages", "dist-packages")
            or directory.parent == directory
        ):
            break
        directory = directory.parent
    return None


def _module_file(root: Path, parts: list[str]) -> Path | None:
    if not parts:
        init = root / "__init__.py"
        return init if init.is_file() else None
    candidate = root.joinpath(*parts)
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if path.is_file():
            return path
    return None


def summarize(path: Path) -> ModuleSummary | None:
    """A file's classes and imports; None when it cannot be read or parsed."""
    try:
        stat = path.stat()
    except OSError:
        return None
    if stat.st_size > _MAX_FILE_BYTES:
        return None
    return _summarize(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _summarize(path: Path, mtime_ns: int, size: int) -> ModuleSummary | None:
    """Cached per version of the file: an edited file is read again."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    summary = ModuleSummary(path=path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = tuple(name for name in map(_dotted, node.bases) if name)
            summary.classes[node.name] = ClassSummary(node.name, bases, _has_mode_layers(node))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            summary.functions[node.name] = _summarize_function(node)
        elif isinstance(node, ast.ImportFrom):
            if any(alias.name == "*" for alias in node.names):
                summary.stars.append((node.module or "", node.level))
                continue
            for alias in node.names:
                origin = f"{node.module}.{alias.name}" if node.module else alias.name
                summary.imports[alias.asname or alias.name] = (origin, node.level)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                summary.imports[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0],
                    0,
                )
    return summary


# Builtins and loop helpers that never touch what they are handed in a way that matters.
_HARMLESS = frozenset(
    {"len", "print", "enumerate", "range", "zip", "iter", "next", "isinstance", "str", "int",
     "float", "list", "tuple", "dict", "min", "max", "sum", "sorted", "getattr", "hasattr",
     "tqdm", "tqdm.tqdm", "type", "repr", "format", "round", "abs"}
)  # fmt: skip


def _summarize_function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> FunctionSummary:
    parameters = {arg.arg for arg in (*node.args.posonlyargs, *node.args.args)}
    methods: set[str] = set()
    passes: set[str] = set()
    for child in ast.walk(node):
        if not isinstance(child, ast.Call):
            continue
        if isinstance(child.func, ast.Attribute):
            methods.add(child.func.attr)
        callee = _dotted(child.func)
        handed = [*child.args, *(keyword.value for keyword in child.keywords)]
        if (
            callee is not None
            and callee not in _HARMLESS
            and any(isinstance(arg, ast.Name) and arg.id in parameters for arg in handed)
        ):
            passes.add(callee)
    return FunctionSummary(node.name, frozenset(methods), frozenset(passes))


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _has_mode_layers(node: ast.ClassDef) -> bool:
    """Dropout/BatchNorm named in the class, or a recurrent layer built with dropout > 0."""
    for child in ast.walk(node):
        name = None
        if isinstance(child, ast.Attribute):
            name = child.attr
        elif isinstance(child, ast.Name):
            name = child.id
        if name in MODE_DEPENDENT_LAYERS or (name == "dropout" and _is_functional(child)):
            return True
        if isinstance(child, ast.Call) and _mode_dependent_call(child):
            return True
    return False


def _is_functional(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and _dotted(node.value) in ("F", "functional")


def _mode_dependent_call(call: ast.Call) -> bool:
    keyword = MODE_DEPENDENT_WITH.get((_dotted(call.func) or "").rpartition(".")[2])
    if keyword is None:
        return False
    for arg in call.keywords:
        if arg.arg == keyword:
            value = arg.value
            if isinstance(value, ast.Constant):
                return bool(value.value) and value.value != 0
            return True
    return False
