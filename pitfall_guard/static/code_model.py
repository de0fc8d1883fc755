"""The pieces of a script the facts are made of: loops, functions, calls and their events.

Plain data and small readers of libcst nodes, shared by the facts pass (`collect.py`), the
facts' queries (`facts.py`) and the rules.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import libcst as cst

from pitfall_guard.static.names import dotted_name
from pitfall_guard.static.walk import iter_children

# Methods that return the same module or tensor, only moved or cast.
CHAIN_METHODS = frozenset(
    {
        "to",
        "cuda",
        "cpu",
        "train",
        "eval",
        "float",
        "double",
        "half",
        "bfloat16",
        "detach",
        "requires_grad_",
        "contiguous",
        "share_memory",
        "to_empty",
    }
)
MOVE_METHODS = frozenset({"to", "cuda", "cpu"})


class EventKind(enum.Enum):
    BACKWARD = "backward"
    STEP = "step"
    CLOSURE_STEP = "closure-step"
    SCHEDULER_STEP = "scheduler-step"
    CLEAR = "clear"
    EVAL_MODE = "eval-mode"
    TRAIN_MODE = "train-mode"
    CALL = "call"


@dataclass(frozen=True)
class GradEvent:
    """One thing that matters to training, in source order.

    `target` is the optimizer a step or a clear applies to (None: every parameter, as with
    `model.zero_grad()` or `p.grad = None`), the model of a mode switch, or the function
    name of a CALL.
    """

    kind: EventKind
    target: str | None
    node: cst.CSTNode


@dataclass(eq=False)
class Loop:
    """A `for` or `while` loop and everything that happens inside it, nested loops included."""

    node: cst.For | cst.While
    parent: Loop | None
    function: Function | None
    raw: list[cst.CSTNode] = field(default_factory=list)
    events: list[GradEvent] = field(default_factory=list)
    assigned: set[str] = field(default_factory=set)

    @property
    def iterable(self) -> cst.BaseExpression | None:
        return self.node.iter if isinstance(self.node, cst.For) else None

    def target_names(self) -> set[str]:
        if not isinstance(self.node, cst.For):
            return set()
        return set(bound_names(self.node.target))


@dataclass(eq=False)
class Function:
    """A function or method of the file; the module's top-level code is one too (node None)."""

    node: cst.FunctionDef | None
    class_name: str | None = None
    no_grad: bool = False
    # The scope the function is defined in (the module's, for a top-level function).
    parent: Function | None = None
    raw: list[cst.CSTNode] = field(default_factory=list)
    events: list[GradEvent] = field(default_factory=list)
    # What this scope assigns to each name, and the .to()/.cuda()/.cpu() calls applied to it.
    assignments: dict[str, list[cst.BaseExpression]] = field(default_factory=dict)
    moves: dict[str, list[cst.Call]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "<module>" if self.node is None else self.node.name.value

    def parameter_names(self) -> list[str]:
        if self.node is None:
            return []
        params = self.node.params
        return [p.name.value for p in (*params.posonly_params, *params.params)]


Arm = tuple[cst.If, int]


@dataclass(frozen=True, eq=False)
class CallSite:
    """A call and where it happens."""

    node: cst.Call
    function: Function
    loops: tuple[Loop, ...]
    no_grad: bool
    # The `if` arms around the call in its function, outermost first: (the If, 0) for its
    # body, (the If, 1) for its else. `if __name__ == "__main__":` is not one.
    arms: tuple[Arm, ...] = ()


@dataclass(frozen=True, eq=False)
class Accumulation:
    """`total += x` (or `total = total + x`) and where it happens."""

    node: cst.CSTNode
    target: str
    added: cst.BaseExpression
    function: Function
    loops: tuple[Loop, ...]
    no_grad: bool


@dataclass
class ClassInfo:
    node: cst.ClassDef
    bases: list[str]


def strip_chain(node: cst.BaseExpression) -> tuple[cst.BaseExpression, list[cst.Call]]:
    """`Net().to(device).train()` → (`Net()`, [the .to call, the .train call])."""
    chain: list[cst.Call] = []
    while (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value in CHAIN_METHODS
    ):
        chain.append(node)
        node = node.func.value
    chain.reverse()
    return node, chain


def bound_names(target: cst.BaseExpression) -> Iterator[str]:
    if isinstance(target, cst.Name):
        yield target.value
    elif isinstance(target, cst.Tuple | cst.List):
        for element in target.elements:
            yield from bound_names(element.value)
    elif isinstance(target, cst.StarredElement):
        yield from bound_names(target.value)


def method_name(call: cst.Call) -> str | None:
    return call.func.attr.value if isinstance(call.func, cst.Attribute) else None


def called_function_name(call: cst.Call) -> str | None:
    """`f` for `f(...)` and for `self.f(...)`: calls that may reach a function of the file."""
    func = call.func
    if isinstance(func, cst.Name):
        return func.value
    if (
        isinstance(func, cst.Attribute)
        and isinstance(func.value, cst.Name)
        and func.value.value == "self"
        and func.attr.value not in ("eval", "train", "zero_grad")
    ):
        return func.attr.value
    return None


def is_false(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "False"


def is_grad(node: cst.BaseExpression) -> bool:
    """`p.grad` or `p.grad.data`."""
    if isinstance(node, cst.Attribute) and node.attr.value == "data":
        node = node.value
    return isinstance(node, cst.Attribute) and node.attr.value == "grad"


def assigns_grad(targets: Sequence[cst.BaseExpression]) -> bool:
    return any(isinstance(t, cst.Attribute) and t.attr.value == "grad" for t in targets)


_LOOP_WRAPPERS = ("enumerate", "tqdm", "tqdm.tqdm", "iter")


def loop_source(loop: Loop) -> cst.BaseExpression | None:
    """What a `for` loop really iterates: `loader` for `enumerate(tqdm(loader))`."""
    iterable = loop.iterable
    while isinstance(iterable, cst.Call) and dotted_name(iterable.func) in _LOOP_WRAPPERS:
        iterable = iterable.args[0].value if iterable.args else None
    return iterable


def calls_within(node: cst.CSTNode) -> Iterator[cst.Call]:
    """Every call inside `node`, itself included."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Call):
            yield current
        stack.extend(iter_children(current))


def decorator_callee(node: cst.BaseExpression) -> cst.BaseExpression:
    return node.func if isinstance(node, cst.Call) else node
