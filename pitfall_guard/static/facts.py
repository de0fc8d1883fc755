"""What the names in a script are, learned once per file and shared by every rule.

The facts pass reads the imports, classifies the objects the script builds (optimizers,
schedulers, gradient scalers), and records, for every loop and every function, the gradient
events in source order: backward passes, optimizer steps, gradient clearing and calls to the
file's own functions. Rules ask these facts questions instead of walking the tree again.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import libcst as cst

from pitfall_guard.static.names import ImportTable, dotted_name, last_part
from pitfall_guard.static.walk import visitor_methods, walk


class Kind(enum.Enum):
    """What a name holds, as far as training code is concerned."""

    OPTIMIZER = "optimizer"
    SCHEDULER = "scheduler"
    SCALER = "scaler"


class EventKind(enum.Enum):
    BACKWARD = "backward"
    STEP = "step"
    CLOSURE_STEP = "closure-step"
    SCHEDULER_STEP = "scheduler-step"
    CLEAR = "clear"
    CALL = "call"


@dataclass(frozen=True)
class GradEvent:
    """One thing that touches gradients.

    `target` is the optimizer a step or a clear applies to (None: every parameter, as with
    `model.zero_grad()` or `p.grad = None`), or the function name of a CALL.
    """

    kind: EventKind
    target: str | None
    node: cst.CSTNode


@dataclass
class Loop:
    """A `for` or `while` loop and everything that happens inside it, nested loops included."""

    node: cst.For | cst.While
    parent: Loop | None
    function: str | None
    raw: list[cst.CSTNode] = field(default_factory=list)
    events: list[GradEvent] = field(default_factory=list)

    def has(self, kind: EventKind) -> bool:
        return any(event.kind is kind for event in self.events)

    def of_kind(self, kind: EventKind) -> Iterator[GradEvent]:
        return (event for event in self.events if event.kind is kind)


@dataclass
class Function:
    """A function or method defined in the file (nested definitions are their own Function)."""

    node: cst.FunctionDef
    raw: list[cst.CSTNode] = field(default_factory=list)
    events: list[GradEvent] = field(default_factory=list)


OPTIMIZER_CLASSES = frozenset(
    {
        "SGD", "Adam", "AdamW", "Adamax", "Adagrad", "Adadelta", "Adafactor", "ASGD",
        "LBFGS", "NAdam", "RAdam", "RMSprop", "Rprop", "SparseAdam", "Muon", "Optimizer",
    }
)
SCALER_CLASSES = frozenset({"GradScaler", "ShardedGradScaler"})

# Fallbacks for names whose constructor is out of sight (a parameter, a factory function).
_OPTIMIZER_NAME = re.compile(r"optim|(^|_)opt(_|\d|$)|^opt[A-Z]", re.IGNORECASE)
_SCHEDULER_NAME = re.compile(r"sched", re.IGNORECASE)
_SCALER_NAME = re.compile(r"scaler", re.IGNORECASE)


def kind_of_constructor(qualified_name: str) -> Kind | None:
    """The kind of object that calling `qualified_name` builds, for the torch API."""
    if qualified_name.startswith("torch.optim.lr_scheduler."):
        return Kind.SCHEDULER
    name = last_part(qualified_name)
    if name in SCALER_CLASSES and qualified_name.startswith("torch."):
        return Kind.SCALER
    if qualified_name.startswith("torch.optim.") and name in OPTIMIZER_CLASSES:
        return Kind.OPTIMIZER
    return None


def kind_from_name(name: str) -> Kind | None:
    """A guess from the variable name alone, used only when no constructor was seen."""
    leaf = last_part(name)
    if _SCALER_NAME.search(leaf):
        return Kind.SCALER
    if _SCHEDULER_NAME.search(leaf):
        return Kind.SCHEDULER
    if _OPTIMIZER_NAME.search(leaf):
        return Kind.OPTIMIZER
    return None


class Facts:
    """The shared knowledge about one module. Build it with `Facts.build(module)`."""

    def __init__(self) -> None:
        self.imports = ImportTable()
        self.bindings: dict[str, Kind] = {}
        self.loops: list[Loop] = []
        self.functions: dict[str, Function] = {}
        self._clearing_functions: frozenset[str] = frozenset()

    @classmethod
    def build(cls, module: cst.Module) -> Facts:
        facts = cls()
        visitor = _FactsVisitor(facts)
        walk(module, {name: [method] for name, method in visitor_methods(visitor).items()})
        facts._classify_events()
        return facts

    @property
    def uses_torch(self) -> bool:
        return self.imports.imports_module("torch")

    def qualified_name(self, node: cst.BaseExpression) -> str | None:
        return self.imports.qualified_name(node)

    def kind_of(self, node: cst.BaseExpression) -> Kind | None:
        """The kind of the object `node` names: from its constructor, else from its name."""
        name = dotted_name(node)
        if name is None:
            return None
        known = self.bindings.get(name)
        return known if known is not None else kind_from_name(name)

    def clears_gradients(self, function_name: str) -> bool:
        """Whether calling the file's function `function_name` clears gradients."""
        return function_name in self._clearing_functions

    def clears_for(self, events: Sequence[GradEvent], optimizer: str | None) -> bool:
        """Whether `events` contain something that clears the gradients `optimizer` steps on."""
        for event in events:
            if event.kind is EventKind.CLEAR and event.target in (None, optimizer):
                return True
            if event.kind is EventKind.CALL and self.clears_gradients(event.target or ""):
                return True
        return False

    def bind(self, target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        name = dotted_name(target)
        if name is None or not isinstance(value, cst.Call):
            return
        qualified = self.qualified_name(value.func)
        kind = None if qualified is None else kind_of_constructor(qualified)
        if kind is not None:
            self.bindings[name] = kind

    def _classify_events(self) -> None:
        owners: list[Loop | Function] = [*self.loops, *self.functions.values()]
        for owner in owners:
            owner.events = [e for e in map(self._classify, owner.raw) if e is not None]
        clearing = {
            name for name, function in self.functions.items()
            if any(event.kind is EventKind.CLEAR for event in function.events)
        }
        changed = True
        while changed:
            changed = False
            for name, function in self.functions.items():
                if name not in clearing and any(
                    event.kind is EventKind.CALL and event.target in clearing
                    for event in function.events
                ):
                    clearing.add(name)
                    changed = True
        self._clearing_functions = frozenset(clearing)

    def _classify(self, node: cst.CSTNode) -> GradEvent | None:
        if isinstance(node, cst.Assign | cst.AugAssign | cst.AnnAssign):
            return GradEvent(EventKind.CLEAR, None, node)
        assert isinstance(node, cst.Call)
        func = node.func
        if self.qualified_name(func) == "torch.autograd.backward":
            return GradEvent(EventKind.BACKWARD, None, node)
        if isinstance(func, cst.Name):
            return GradEvent(EventKind.CALL, func.value, node)
        if not isinstance(func, cst.Attribute):
            return None
        method, receiver = func.attr.value, func.value
        if method == "backward":
            return GradEvent(EventKind.BACKWARD, None, node)
        if method == "step":
            return self._classify_step(node, receiver)
        if method == "zero_grad":
            is_optimizer = self.kind_of(receiver) is Kind.OPTIMIZER
            return GradEvent(EventKind.CLEAR, dotted_name(receiver) if is_optimizer else None, node)
        if method in ("zero_", "fill_") and _is_grad(receiver):
            return GradEvent(EventKind.CLEAR, None, node)
        if isinstance(receiver, cst.Name) and receiver.value == "self":
            return GradEvent(EventKind.CALL, method, node)
        return None

    def _classify_step(self, node: cst.Call, receiver: cst.BaseExpression) -> GradEvent | None:
        kind = self.kind_of(receiver)
        if kind is Kind.SCALER:
            optimizer = dotted_name(node.args[0].value) if node.args else None
            return GradEvent(EventKind.STEP, optimizer, node)
        if kind is Kind.SCHEDULER:
            return GradEvent(EventKind.SCHEDULER_STEP, dotted_name(receiver), node)
        if kind is Kind.OPTIMIZER:
            event_kind = EventKind.CLOSURE_STEP if node.args else EventKind.STEP
            return GradEvent(event_kind, dotted_name(receiver), node)
        return None


def _is_grad(node: cst.BaseExpression) -> bool:
    """`p.grad` or `p.grad.data`."""
    if isinstance(node, cst.Attribute) and node.attr.value == "data":
        node = node.value
    return isinstance(node, cst.Attribute) and node.attr.value == "grad"


def _assigns_grad(targets: Sequence[cst.BaseExpression]) -> bool:
    return any(isinstance(t, cst.Attribute) and t.attr.value == "grad" for t in targets)


class _FactsVisitor:
    """One walk over the module that fills a Facts (events are classified afterwards)."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.loops: list[Loop] = []
        self.functions: list[Function | None] = [None]
        self.saved_loops: list[list[Loop]] = []

    def _record(self, node: cst.CSTNode) -> None:
        for loop in self.loops:
            loop.raw.append(node)
        function = self.functions[-1]
        if function is not None:
            function.raw.append(node)

    def _enter_scope(self, function: Function | None) -> None:
        self.saved_loops.append(self.loops)
        self.loops = []
        self.functions.append(function)

    def _leave_scope(self) -> None:
        self.loops = self.saved_loops.pop()
        self.functions.pop()

    def visit_Import(self, node: cst.Import) -> None:
        self.facts.imports.add_import(node)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        self.facts.imports.add_import_from(node)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        function = Function(node)
        self.facts.functions.setdefault(node.name.value, function)
        self._enter_scope(function)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._leave_scope()

    def visit_Lambda(self, node: cst.Lambda) -> None:
        self._enter_scope(None)

    def leave_Lambda(self, original_node: cst.Lambda) -> None:
        self._leave_scope()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._enter_scope(None)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._leave_scope()

    def _enter_loop(self, node: cst.For | cst.While) -> None:
        function = self.functions[-1]
        loop = Loop(
            node,
            parent=self.loops[-1] if self.loops else None,
            function=None if function is None else function.node.name.value,
        )
        self.facts.loops.append(loop)
        self.loops.append(loop)

    def visit_For(self, node: cst.For) -> None:
        self._enter_loop(node)

    def leave_For(self, original_node: cst.For) -> None:
        self.loops.pop()

    def visit_While(self, node: cst.While) -> None:
        self._enter_loop(node)

    def leave_While(self, original_node: cst.While) -> None:
        self.loops.pop()

    def visit_Call(self, node: cst.Call) -> None:
        self._record(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        if _assigns_grad([t.target for t in node.targets]):
            self._record(node)
        for target in node.targets:
            self.facts.bind(target.target, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None and _assigns_grad([node.target]):
            self._record(node)
        self.facts.bind(node.target, node.value)

    def visit_Param(self, node: cst.Param) -> None:
        if node.annotation is None:
            return
        qualified = self.facts.qualified_name(node.annotation.annotation)
        kind = None if qualified is None else kind_of_constructor(qualified)
        if kind is not None:
            self.facts.bindings[node.name.value] = kind
