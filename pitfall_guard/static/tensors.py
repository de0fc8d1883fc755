"""Where tensors live and whether they carry autograd graphs, read from assignments.

Shared by the device rules: a name counts as a GPU tensor (or a tensor with a graph) only
when every assignment to it in the file says so.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from pitfall_guard.static.facts import Facts, Kind, strip_chain
from pitfall_guard.static.names import dotted_name

_GRAD_FREE_METHODS = frozenset(
    {
        "argmax",
        "argmin",
        "eq",
        "ne",
        "gt",
        "lt",
        "ge",
        "le",
        "long",
        "int",
        "bool",
        "detach",
        "item",
        "tolist",
        "size",
        "numel",
        "nonzero",
        "sign",
        "data",
        "shape",
        "dtype",
        "device",
    }
)


def string_value(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def model_name(facts: Facts, callee: cst.BaseExpression) -> str | None:
    name = dotted_name(callee)
    if name is not None and facts.kind_of(callee) is Kind.MODEL:
        return name
    return None


def moved_to_cpu_only(facts: Facts, name: str) -> bool:
    """`model.to("cpu")`: moved, but nowhere that could disagree with an unmoved batch."""
    return all(
        _moves_to_cpu(value) for value in facts.assignments.get(name, []) if strip_chain(value)[1]
    ) and bool(facts.assignments.get(name))


def _moves_to_cpu(value: cst.BaseExpression) -> bool:
    _, chain = strip_chain(value)
    for call in chain:
        if isinstance(call.func, cst.Attribute) and call.func.attr.value in ("to", "cuda"):
            if call.func.attr.value == "cuda" or not call.args:
                return False
            if string_value(call.args[0].value) != "cpu":
                return False
    return True


class TensorOrigins:
    """Which names hold tensors that may live on a GPU, and which may carry autograd graphs.

    Names are followed through assignments in the whole file; a name counts only when every
    assignment to it agrees, so `preds = preds.cpu()` anywhere makes `preds` a CPU tensor.
    """

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.moved_models = {name for name in facts.moved if facts.kind_of_name(name) is Kind.MODEL}
        self.on_device = self._fixpoint(self._is_device_expression)
        self.with_grad = self._fixpoint(self._is_grad_expression, skip_no_grad=True)

    def _fixpoint(
        self,
        test: Callable[[cst.BaseExpression, set[str]], bool],
        skip_no_grad: bool = False,
    ) -> set[str]:
        names: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, values in self.facts.assignments.items():
                if name in names or not values:
                    continue
                if skip_no_grad and any(v in self.facts.no_grad_values for v in values):
                    continue
                if all(test(value, names) for value in values):
                    names.add(name)
                    changed = True
        return names

    def _is_device_expression(self, node: cst.BaseExpression, known: set[str]) -> bool:
        if isinstance(node, cst.Name):
            return node.value in known
        if isinstance(node, cst.BinaryOperation):
            return self._is_device_expression(node.left, known) or self._is_device_expression(
                node.right, known
            )
        if isinstance(node, cst.Subscript | cst.Attribute):
            return self._is_device_expression(node.value, known)
        if not isinstance(node, cst.Call):
            return False
        func = node.func
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in ("cpu", "numpy", "item", "tolist"):
                return False
            if method == "cuda":
                return True
            if method == "to" and node.args:
                return string_value(node.args[0].value) != "cpu"
            if dotted_name(func) in self.moved_models:
                return True
            return self._is_device_expression(func.value, known)
        return dotted_name(func) in self.moved_models

    def _is_grad_expression(self, node: cst.BaseExpression, known: set[str]) -> bool:
        if node in self.facts.no_grad_values:
            return False
        if isinstance(node, cst.Name):
            return node.value in known
        if isinstance(node, cst.BinaryOperation):
            return self._is_grad_expression(node.left, known) or self._is_grad_expression(
                node.right, known
            )
        if isinstance(node, cst.Subscript):
            return self._is_grad_expression(node.value, known)
        if not isinstance(node, cst.Call):
            return False
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in _GRAD_FREE_METHODS:
            return False
        if model_name(self.facts, func) is not None:
            return True
        if any(
            arg.keyword is not None
            and arg.keyword.value == "requires_grad"
            and isinstance(arg.value, cst.Name)
            and arg.value.value == "True"
            for arg in node.args
        ):
            return True
        if isinstance(func, cst.Attribute):
            receiver_grad = self._is_grad_expression(func.value, known)
            qualified = self.facts.qualified_name(func) or ""
            if qualified.startswith("torch.") and node.args:
                return receiver_grad or self._is_grad_expression(node.args[0].value, known)
            return receiver_grad
        return False

    def is_on_device(self, node: cst.BaseExpression) -> bool:
        return self._is_device_expression(node, self.on_device)

    def requires_grad(self, node: cst.BaseExpression) -> bool:
        return self._is_grad_expression(node, self.with_grad)

    def root(self, node: cst.BaseExpression) -> cst.BaseExpression:
        while True:
            if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
                if node.func.attr.value in ("cpu", "detach"):
                    return node
                node = node.func.value
            elif isinstance(node, cst.Attribute | cst.Subscript):
                node = node.value
            else:
                return node


def method_name(call: cst.Call) -> str | None:
    return call.func.attr.value if isinstance(call.func, cst.Attribute) else None
