"""The facts pass: one walk over a module that fills a `Facts`.

It tracks the enclosing function, class, loops and gradient mode of every node, and records
what the queries of `Facts` need: imports, assignments and moves, calls with their context,
raw events per loop and function (classified once the walk is over), accumulations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import libcst as cst

from pitfall_guard.static.code_model import (
    MOVE_METHODS,
    Accumulation,
    Arm,
    CallSite,
    ClassInfo,
    Function,
    Loop,
    assigns_grad,
    bound_names,
    decorator_callee,
    is_false,
    method_name,
)
from pitfall_guard.static.names import dotted_name
from pitfall_guard.static.torch_api import Kind, is_no_grad_context, kind_of_constructor

if TYPE_CHECKING:
    from pitfall_guard.static.facts import Facts


class FactsCollector:
    """One walk over the module that fills a Facts (events are classified afterwards)."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.loops: list[Loop] = []
        self.functions: list[Function] = [facts.module_scope]
        self.classes: list[str | None] = [None]
        self.saved_loops: list[list[Loop]] = []
        self.no_grad_depth = 0
        self.no_grad_withs: set[cst.With] = set()
        # The if arms open in the current function, and the blocks that open one.
        self.arms: list[Arm] = []
        self.saved_arms: list[list[Arm]] = []
        self.arm_blocks: dict[cst.CSTNode, Arm] = {}

    def _record(self, node: cst.CSTNode) -> None:
        for loop in self.loops:
            loop.raw.append(node)
        self.functions[-1].raw.append(node)

    def _enter_scope(self, function: Function) -> None:
        self.saved_loops.append(self.loops)
        self.loops = []
        self.saved_arms.append(self.arms)
        self.arms = []
        self.functions.append(function)

    def _leave_scope(self) -> None:
        self.loops = self.saved_loops.pop()
        self.arms = self.saved_arms.pop()
        self.functions.pop()

    def visit_If(self, node: cst.If) -> None:
        self._open_arm(node)  # an `elif` is the else arm of the `if` before it
        if _is_main_guard(node.test):
            return
        self.arm_blocks[node.body] = (node, 0)
        if isinstance(node.orelse, cst.Else):
            self.arm_blocks[node.orelse.body] = (node, 1)
        elif isinstance(node.orelse, cst.If):
            self.arm_blocks[node.orelse] = (node, 1)  # `elif`: a nested if in the else arm

    def leave_If(self, original_node: cst.If) -> None:
        self._close_arm(original_node)

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        self._open_arm(node)

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock) -> None:
        self._close_arm(original_node)

    def visit_SimpleStatementSuite(self, node: cst.SimpleStatementSuite) -> None:
        self._open_arm(node)

    def leave_SimpleStatementSuite(self, original_node: cst.SimpleStatementSuite) -> None:
        self._close_arm(original_node)

    def _open_arm(self, node: cst.CSTNode) -> None:
        arm = self.arm_blocks.get(node)
        if arm is not None:
            self.arms.append(arm)

    def _close_arm(self, node: cst.CSTNode) -> None:
        if self.arms and self.arm_blocks.get(node) == self.arms[-1]:
            self.arms.pop()

    def visit_Import(self, node: cst.Import) -> None:
        self.facts.imports.add_import(node)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        self.facts.imports.add_import_from(node)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        bases = [self.facts.qualified_name(arg.value) or "" for arg in node.bases]
        self.facts.classes.setdefault(node.name.value, ClassInfo(node, bases))
        self.classes.append(node.name.value)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        no_grad = any(
            is_no_grad_context(self.facts.qualified_name(decorator_callee(d.decorator)))
            for d in node.decorators
        )
        function = Function(
            node, class_name=self.classes[-1], no_grad=no_grad, parent=self.functions[-1]
        )
        self.facts.functions.setdefault(node.name.value, function)
        self.facts.all_functions.append(function)
        self._enter_scope(function)
        self.classes.append(None)
        if no_grad:
            self.no_grad_depth += 1

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        if self.functions[-1].no_grad:
            self.no_grad_depth -= 1
        self.classes.pop()
        self._leave_scope()

    def visit_Lambda(self, node: cst.Lambda) -> None:
        self._enter_scope(Function(None))

    def leave_Lambda(self, original_node: cst.Lambda) -> None:
        self._leave_scope()

    def visit_With(self, node: cst.With) -> None:
        for item in node.items:  # `with io.BytesIO() as buffer:` binds `buffer`
            if item.asname is not None and isinstance(item.asname.name, cst.Name):
                self.facts.bind(item.asname.name, item.item, self.functions[-1])
        if any(
            isinstance(item.item, cst.Call) and self._disables_grad(item.item)
            for item in node.items
        ):
            self.no_grad_withs.add(node)
            self.no_grad_depth += 1

    def leave_With(self, original_node: cst.With) -> None:
        if original_node in self.no_grad_withs:
            self.no_grad_depth -= 1

    def _disables_grad(self, call: cst.Call) -> bool:
        qualified = self.facts.qualified_name(call.func)
        if qualified in ("torch.set_grad_enabled", "torch.autograd.set_grad_enabled"):
            return bool(call.args) and is_false(call.args[0].value)
        return is_no_grad_context(qualified)

    def _enter_loop(self, node: cst.For | cst.While) -> None:
        loop = Loop(
            node, parent=self.loops[-1] if self.loops else None, function=self.functions[-1]
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
        self.facts.calls.append(
            CallSite(
                node,
                self.functions[-1],
                tuple(self.loops),
                self.no_grad_depth > 0,
                tuple(self.arms),
            )
        )

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if dotted_name(node.left) is not None and dotted_name(node.right) is not None:
            self.facts.name_operations.append(node)

    def visit_Expr(self, node: cst.Expr) -> None:
        call = node.value
        if not isinstance(call, cst.Call):
            return
        # `model.to(device)` as a statement moves the module in place.
        if method_name(call) in MOVE_METHODS and isinstance(call.func, cst.Attribute):
            name = dotted_name(call.func.value)
            if name is not None:
                self.facts.note_move(name, call, self.functions[-1])
        # `torch.set_grad_enabled(False)` as a statement: the rest of the scope has no grad.
        qualified = self.facts.qualified_name(call.func)
        if qualified in ("torch.set_grad_enabled", "torch.autograd.set_grad_enabled") and (
            call.args and is_false(call.args[0].value)
        ):
            self.functions[-1].no_grad = True

    def _note_assignment(
        self, targets: Sequence[cst.BaseExpression], value: cst.BaseExpression
    ) -> None:
        if self.no_grad_depth > 0:
            self.facts.no_grad_values.add(value)
        names = {name for target in targets for name in bound_names(target)}
        for loop in self.loops:
            loop.assigned |= names

    def visit_Assign(self, node: cst.Assign) -> None:
        self._note_assignment([t.target for t in node.targets], node.value)
        # `total = total + loss` is `total += loss` written out.
        total = node.value
        if (
            len(node.targets) == 1
            and isinstance(total, cst.BinaryOperation)
            and isinstance(total.operator, cst.Add)
        ):
            name = dotted_name(node.targets[0].target)
            if name is not None and name == dotted_name(total.left):
                self._accumulation(node, name, total.right)
        if assigns_grad([t.target for t in node.targets]):
            self._record(node)
        function = self.functions[-1]
        for target in node.targets:
            self.facts.bind(target.target, node.value, function)
            if not isinstance(target.target, cst.Tuple | cst.List):
                continue
            if isinstance(node.value, cst.Tuple):
                for element, value in zip(
                    target.target.elements, node.value.elements, strict=False
                ):
                    self.facts.bind(element.value, value.value, function)
            else:
                # `model, loader = accelerator.prepare(model, loader)`: each name is reassigned.
                # `train_iter, val_iter = BucketIterator.splits(...)`: each is a loader.
                made = node.value
                loaders = (
                    isinstance(made, cst.Call) and self.facts.kind_of_call(made) is Kind.LOADER
                )
                for name in bound_names(target.target):
                    self.facts.assignments.setdefault(name, []).append(node.value)
                    function.assignments.setdefault(name, []).append(node.value)
                    if loaders and isinstance(made, cst.Call):
                        self.facts.bindings[name] = Kind.LOADER
                        self.facts.constructors[name] = made
                for index, element in enumerate(target.target.elements):
                    name = dotted_name(element.value)
                    if name is not None:
                        self.facts.unpacked[(node.value, name)] = index

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._note_assignment([node.target], node.value)
        if node.value is not None and assigns_grad([node.target]):
            self._record(node)
        self.facts.bind(node.target, node.value, self.functions[-1])

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        target = dotted_name(node.target)
        if target is not None and isinstance(node.operator, cst.AddAssign):
            self._accumulation(node, target, node.value)

    def _accumulation(self, node: cst.CSTNode, target: str, added: cst.BaseExpression) -> None:
        self.facts.accumulations.append(
            Accumulation(
                node, target, added, self.functions[-1], tuple(self.loops), self.no_grad_depth > 0
            )
        )

    def visit_Param(self, node: cst.Param) -> None:
        if node.annotation is None:
            return
        qualified = self.facts.qualified_name(node.annotation.annotation)
        kind = None if qualified is None else kind_of_constructor(qualified)
        if kind is not None:
            self.facts.annotated[node.name.value] = kind


def _is_main_guard(test: cst.BaseExpression) -> bool:
    """`if __name__ == "__main__":` runs whenever the script does."""
    return (
        isinstance(test, cst.Comparison)
        and isinstance(test.left, cst.Name)
        and test.left.value == "__name__"
    )
