"""Reading names out of expressions: dotted paths and import-resolved qualified names."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst


def dotted_name(node: cst.BaseExpression) -> str | None:
    """`a.b.c` for a chain of attribute accesses on a name, else None (calls, subscripts…)."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        head = dotted_name(node.value)
        return None if head is None else f"{head}.{node.attr.value}"
    return None


def entry_name(node: cst.BaseExpression) -> str | None:
    """`a.b`, or an entry of a literal key: `nets['G']` → `nets["G"]`, `models[0]`.

    The name a dict or list of models gives each of its models (`Facts.bind` binds the
    entries of a literal dict or list under these names).
    """
    name = dotted_name(node)
    if name is not None or not isinstance(node, cst.Subscript) or len(node.slice) != 1:
        return name
    owner = dotted_name(node.value)
    index = node.slice[0].slice
    key = index.value if isinstance(index, cst.Index) else None
    if owner is None or key is None:
        return None
    return key_name(owner, key)


def key_name(owner: str, key: cst.BaseExpression) -> str | None:
    """`owner["key"]` for a string key without dots, `owner[0]` for an integer; else None."""
    if isinstance(key, cst.SimpleString):
        value = key.evaluated_value
        if isinstance(value, str) and not set(value) & set('."\\'):
            return f'{owner}["{value}"]'
    elif isinstance(key, cst.Integer):
        return f"{owner}[{int(key.value, 0)}]"
    return None


def is_test_path(path: str) -> bool:
    """A test module (`test_*.py`, `*_test.py`, `conftest.py`, anything under `tests/` or a
    `testing/` folder of test helpers): its code exercises mechanics (devices chosen by
    markers, learning rates and checkpoints as values under test) rather than a training."""
    parts = path.replace("\\", "/").split("/")
    name = parts[-1]
    return (
        name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
        or "tests" in parts[:-1]
        or "testing" in parts[:-1]
    )


def last_part(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class ImportTable:
    """What each imported name of a file stands for, read from its import statements.

    `import torch.nn as nn` makes `nn` stand for `torch.nn`; `from torch import optim as O`
    makes `O` stand for `torch.optim`. Names bound anywhere in the file count: scripts rarely
    rebind an imported name, and reading one table is far cheaper than scope analysis.
    """

    def __init__(self) -> None:
        self._aliases: dict[str, str] = {}
        # `from helpers import *`: any unknown name may come from another file; the modules.
        self.star_import = False
        self.star_modules: list[tuple[str, int]] = []
        # `from .models import Net`: Net -> (".models.Net" without the dots, 1).
        self._relative: dict[str, tuple[str, int]] = {}

    def add_import(self, node: cst.Import) -> None:
        for alias in node.names:
            full = dotted_name(alias.name)
            if full is None:
                continue
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self._aliases[alias.asname.name.value] = full
            else:
                head = full.split(".", 1)[0]
                self._aliases[head] = head

    def add_import_from(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            self.star_import = True
            module = dotted_name(node.module) if node.module is not None else ""
            if module is not None:
                self.star_modules.append((module, len(node.relative)))
            return
        if node.relative:
            self._add_relative(node, len(node.relative), node.names)
            return
        if node.module is None:
            return
        module = dotted_name(node.module)
        if module is None:
            return
        for alias in node.names:
            if not isinstance(alias.name, cst.Name):
                continue
            local = alias.name.value
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            self._aliases[local] = f"{module}.{alias.name.value}"

    def _add_relative(
        self, node: cst.ImportFrom, level: int, names: Sequence[cst.ImportAlias]
    ) -> None:
        module = dotted_name(node.module) if node.module is not None else None
        for alias in names:
            if not isinstance(alias.name, cst.Name):
                continue
            local = alias.name.value
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            origin = f"{module}.{alias.name.value}" if module else alias.name.value
            self._relative[local] = (origin, level)

    def import_origin(self, node: cst.BaseExpression) -> tuple[str, int] | None:
        """Where an imported name comes from, for finding it in the project's files:
        ("models.Net", 0) after `from models import Net`, ("models.Net", 1) after
        `from .models import Net`; None for a name the file does not import."""
        name = dotted_name(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        if head in self._relative:
            origin, level = self._relative[head]
            return (f"{origin}.{rest}" if rest else origin), level
        if head in self._aliases:
            resolved = self._aliases[head]
            return (f"{resolved}.{rest}" if rest else resolved), 0
        return None

    def project_origins(self, node: cst.BaseExpression) -> list[tuple[str, int]]:
        """Where a name may come from in the project: its import, else each module the file
        star-imports (`from model import *` then `Net()`: maybe `model.Net`)."""
        origin = self.import_origin(node)
        if origin is not None:
            return [origin]
        name = dotted_name(node)
        if name is None or not self.star_modules or name.partition(".")[0] in self._aliases:
            return []
        return [
            (f"{module}.{name}" if module else name, level) for module, level in self.star_modules
        ]

    def origins(self) -> dict[str, str]:
        """Each imported local name and what it stands for."""
        return dict(self._aliases)

    def qualified_name(self, node: cst.BaseExpression) -> str | None:
        """`torch.optim.SGD` for `O.SGD` after `from torch import optim as O`; None if unknown.

        A name that was never imported resolves to itself, so a builtin or a local class keeps
        its plain name.
        """
        name = dotted_name(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        resolved = self._aliases.get(head, head)
        return f"{resolved}.{rest}" if rest else resolved
