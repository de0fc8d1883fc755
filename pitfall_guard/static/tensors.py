"""Where tensors live and whether they carry autograd graphs, read from assignments.

Shared by the device rules: a name counts as a GPU tensor (or a tensor with a graph) only
when every assignment to it in the file says so.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from pitfall_guard.static.facts import Facts, Function, Kind
from pitfall_guard.static.names import dotted_name, entry_name

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
    name = entry_name(callee)
    if name is not None and facts.kind_of(callee) is Kind.MODEL:
        return name
    return None


Key = tuple[Function | None, str]


class TensorOrigins:
    """Which names hold tensors that may live on a GPU, and which may carry autograd graphs.

    A name is read in its function: a function's own assignments, else the module's (names
    with a dot, such as `self.x`, are read file-wide). It counts only when every assignment
    agrees, so `preds = preds.cpu()` in the same function makes `preds` a CPU tensor.
    """

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.on_device = self._fixpoint(self._is_device_expression)
        self.with_grad = self._fixpoint(self._is_grad_expression, skip_no_grad=True)

    def key(self, name: str, scope: Function) -> Key:
        if "." in name:
            return (None, name)
        return (scope if name in scope.assignments else self.facts.module_scope, name)

    def _all_keys(self) -> list[tuple[Key, Function, list[cst.BaseExpression]]]:
        keys: list[tuple[Key, Function, list[cst.BaseExpression]]] = []
        for function in self.facts.all_functions:
            for name, values in function.assignments.items():
                if "." not in name:
                    keys.append(((function, name), function, values))
        for name, values in self.facts.assignments.items():
            if "." in name:
                keys.append(((None, name), self.facts.module_scope, values))
        return keys

    def _fixpoint(
        self,
        test: Callable[[cst.BaseExpression, Function, set[Key]], bool],
        skip_no_grad: bool = False,
    ) -> set[Key]:
        known: set[Key] = set()
        candidates = self._all_keys()
        changed = True
        while changed:
            changed = False
            for key, scope, values in candidates:
                if key in known or not values:
                    continue
                if skip_no_grad and (
                    scope.no_grad or any(v in self.facts.no_grad_values for v in values)
                ):
                    continue
                if all(test(value, scope, known) for value in values):
                    known.add(key)
                    changed = True
        return known

    def _moved_model(self, callee: cst.BaseExpression, scope: Function) -> bool:
        name = model_name(self.facts, callee)
        return (
            name is not None
            and self.facts.is_moved(name, scope)
            and not self.facts.moved_to_cpu_only(name, scope)
        )

    def _is_device_expression(
        self, node: cst.BaseExpression, scope: Function, known: set[Key]
    ) -> bool:
        name = dotted_name(node)
        if isinstance(node, cst.Name) or (name is not None and name.startswith("self.")):
            return name is not None and self.key(name, scope) in known
        if isinstance(node, cst.BinaryOperation):
            return self._is_device_expression(
                node.left, scope, known
            ) or self._is_device_expression(node.right, scope, known)
        if isinstance(node, cst.Subscript | cst.Attribute):
            return self._is_device_expression(node.value, scope, known)
        if not isinstance(node, cst.Call):
            return False
        func = node.func
        if self._moved_model(func, scope):
            return True
        if self.facts.kind_of(func) is Kind.LOSS and any(
            self._is_device_expression(arg.value, scope, known) for arg in node.args
        ):
            return True  # `loss = criterion(outputs, targets)` lives where its inputs do
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in ("numpy", "item", "tolist"):
                return False
            if method in ("to", "cuda", "cpu") and self.facts.is_device_move(node):
                return not self.facts.moves_to_cpu(node)
            return self._is_device_expression(func.value, scope, known)
        return False

    def _is_grad_expression(
        self, node: cst.BaseExpression, scope: Function, known: set[Key]
    ) -> bool:
        if node in self.facts.no_grad_values:
            return False
        name = dotted_name(node)
        if isinstance(node, cst.Name) or (name is not None and name.startswith("self.")):
            return name is not None and self.key(name, scope) in known
        if isinstance(node, cst.BinaryOperation):
            return self._is_grad_expression(node.left, scope, known) or self._is_grad_expression(
                node.right, scope, known
            )
        if isinstance(node, cst.Subscript):
            return self._is_grad_expression(node.value, scope, known)
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
            receiver_grad = self._is_grad_expression(func.value, scope, known)
            qualified = self.facts.qualified_name(func) or ""
            if qualified.startswith("torch.") and node.args:
                return receiver_grad or self._is_grad_expression(node.args[0].value, scope, known)
            return receiver_grad
        return False

    def is_on_device(self, node: cst.BaseExpression, scope: Function) -> bool:
        return self._is_device_expression(node, scope, self.on_device)

    def requires_grad(self, node: cst.BaseExpression, scope: Function) -> bool:
        return self._is_grad_expression(node, scope, self.with_grad)

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
