"""PG1xx in the code: gradients. What clears them, and when."""

from __future__ import annotations

import libcst as cst

from pitfall_guard.findings import Edit, Fix
from pitfall_guard.static.facts import EventKind, Facts, Function, GradEvent, Kind, Loop
from pitfall_guard.static.names import dotted_name
from pitfall_guard.static.rule import StaticRule

_CLEARING_METHODS = frozenset({"zero_grad", "zero_", "grad_zero"})


class GradientsNotCleared(StaticRule):
    """
    ## What it catches
    A training loop that calls `loss.backward()` and `optimizer.step()` every iteration, with
    nothing in the loop that clears the gradients: no `optimizer.zero_grad()`, no
    `model.zero_grad()`, no `p.grad = None`.

    ## Why it matters
    `backward()` adds to `.grad`; it does not overwrite it. Without clearing, every step
    applies the sum of all gradients so far, so the effective learning rate grows with each
    iteration and training oscillates or diverges, with no error anywhere.

    ## Example
    ```python
    for images, labels in loader:
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
    ```

    ## Fix
    Clear the gradients once per step, before `backward()` (or right after `step()`):
    ```python
    for images, labels in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
    ```
    Gradient accumulation (several `backward()` per `step()`, cleared after the step) is
    correct code and is not reported.
    """

    code = "PG101"
    name = "gradients-not-cleared"
    summary = "backward() and step() in a loop with nothing that clears the gradients"
    hint = "call optimizer.zero_grad() once per step, before loss.backward()"

    VALID = (
        """
import torch
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()
""",
        # zero_grad at the end of the body
        """
import torch
from torch import optim
optimizer = optim.Adam(model.parameters())
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""",
        # gradient accumulation: k backward passes per step, cleared after the step
        """
import torch
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / 4
    loss.backward()
    if (i + 1) % 4 == 0:
        optimizer.step()
        optimizer.zero_grad()
""",
        # model.zero_grad() and p.grad = None both clear
        """
import torch
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for x, y in loader:
    net.zero_grad()
    loss_fn(net(x), y).backward()
    opt.step()
for x, y in loader:
    for p in net.parameters():
        p.grad = None
    loss_fn(net(x), y).backward()
    opt.step()
""",
        # LBFGS: the closure clears and back-propagates
        """
import torch
opt = torch.optim.LBFGS(model.parameters())
for x, y in loader:
    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss
    opt.step(closure)
""",
        # AMP with a GradScaler, zero_grad inside a helper the loop calls
        """
import torch
scaler = torch.amp.GradScaler("cuda")
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
def reset(optimizer):
    optimizer.zero_grad(set_to_none=True)
for x, y in loader:
    reset(optimizer)
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # a scheduler step is not an optimizer step
        """
import torch
scheduler = torch.optim.lr_scheduler.StepLR(opt, 1)
for epoch in range(3):
    train_one_epoch(model, loader)
    loss.backward()
    scheduler.step()
""",
        # full-batch training: the inner loop only accumulates, the outer one steps and clears
        """
import torch
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(10):
    for x, y in loader:
        loss_fn(model(x), y).backward()
    opt.step()
    opt.zero_grad()
""",
        # a helper of another file clears them (or may: it cannot be read)
        """
import torch
from helpers import clear
from somewhere_else import train_utils
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    clear(optimizer)
    loss_fn(model(x), y).backward()
    optimizer.step()
for x, y in loader:
    train_utils.reset(model)
    loss_fn(model(x), y).backward()
    optimizer.step()
""",
    )
    INVALID = (
        # logging through another file's function does not clear anything
        """
import torch
import wandb
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()  # expect: PG101
    wandb.log({"loss": loss.item()})
""",
        """
import torch
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in range(5):
    for images, labels in train_loader:
        outputs = model(images)
        loss = loss_fn(outputs, labels)
        loss.backward()
        optimizer.step()  # expect: PG101
""",
        # cleared once per epoch only: the inner loop still sums gradients
        """
from torch import optim as O
opt = O.Adam(model.parameters())
for epoch in range(5):
    opt.zero_grad()
    for x, y in loader:
        loss_fn(model(x), y).backward()
        if True:
            opt.step()  # expect: PG101
""",
        # an optimizer passed as a parameter, a while loop, steps under with/try
        """
import torch
def train(model, optimizer, batches):
    step = 0
    while step < 100:
        with torch.autocast("cpu"):
            loss = model(next(batches)).sum()
        try:
            loss.backward()
            optimizer.step()  # expect: PG101
        finally:
            step += 1
""",
        # two optimizers: clearing one does not clear the other
        """
import torch
opt_d = torch.optim.Adam(disc.parameters())
opt_g = torch.optim.Adam(gen.parameters())
for real in loader:
    opt_d.zero_grad()
    d_loss(disc, gen, real).backward()
    opt_d.step()
    g_loss(disc, gen).backward()
    opt_g.step()  # expect: PG101
""",
        # AMP: scaler.step(optimizer) is the optimizer's step
        """
import torch
scaler = torch.cuda.amp.GradScaler()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for x, y in loader:
    scaler.scale(loss_fn(model(x), y)).backward()
    scaler.step(optimizer)  # expect: PG101
    scaler.update()
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        reported: set[cst.CSTNode] = set()
        # A step is reported for the innermost loop that repeats it: first loops that hold it
        # themselves, then loops that reach it through a call to one of the file's functions.
        for expand in (False, True):
            for loop in reversed(self.facts.loops):
                events = self.facts.expand(loop.events) if expand else loop.events
                if not any(event.kind is EventKind.BACKWARD for event in events):
                    continue
                for event in events:
                    if (
                        event.kind is EventKind.STEP
                        and event.node not in reported
                        and not self.facts.clears_for(events, event.target)
                        and not self._may_clear_elsewhere(loop, event.target)
                    ):
                        reported.add(event.node)
                        self._report(event.node, event.target, loop)

    def _may_clear_elsewhere(self, loop: Loop, optimizer: str | None) -> bool:
        """Whether the loop hands the optimizer (or a model) to a function of another file
        that clears gradients, or that cannot be read (then it may well): `clear(optimizer)`
        from `helpers.py`."""
        for site in self.facts.calls:
            if loop not in site.loops:
                continue
            origins = self.facts.imports.project_origins(site.node.func)
            if not origins or any(origin[0].startswith("torch") for origin in origins):
                continue
            handed = [dotted_name(arg.value) for arg in site.node.args]
            if not any(
                name is not None
                and (name == optimizer or self.facts.kind_of_name(name) is Kind.MODEL)
                for name in handed
            ):
                continue
            project = self.facts.project
            if project is None or any(
                project.may_call(*origin, _CLEARING_METHODS) for origin in origins
            ):
                return True
        return False

    def _report(self, step: cst.CSTNode, optimizer: str | None, loop: Loop) -> None:
        loop_line = self.context.line_of(loop.node)
        subject = f"optimizer '{optimizer}'" if optimizer else "the optimizer"
        self.report(
            step,
            f"{subject} steps in the loop at line {loop_line}, but nothing in the loop clears "
            "its gradients, so every step applies the sum of all gradients so far",
            hint=(
                f"call {optimizer or 'optimizer'}.zero_grad() once per step, before loss.backward()"
            ),
        )


class ZeroGradBetweenBackwardAndStep(StaticRule):
    """
    ## What it catches
    `optimizer.zero_grad()` called after `loss.backward()` and before `optimizer.step()`.

    ## Why it matters
    The gradients that `backward()` just computed are wiped before the step can use them:
    the optimizer steps on zeros (or, with `set_to_none=True`, skips every parameter), so the
    model never learns, and nothing raises an error.

    ## Example
    ```python
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    ```

    ## Fix
    Clear the gradients before `backward()` (or after `step()`):
    ```python
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    ```
    """

    code = "PG102"
    name = "zero-grad-between-backward-and-step"
    summary = "zero_grad() between backward() and step() wipes the gradients before the step"
    hint = "move zero_grad() before loss.backward() (or after optimizer.step())"

    VALID = (
        """
import torch
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()
""",
        """
import torch
opt_d = torch.optim.Adam(disc.parameters())
opt_g = torch.optim.Adam(gen.parameters())
for real in loader:
    opt_d.zero_grad()
    d_loss(real).backward()
    opt_d.step()
    opt_g.zero_grad()
    g_loss().backward()
    opt_g.step()
""",
        """
import torch
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for i, (x, y) in enumerate(loader):
    loss_fn(model(x), y).backward()
    if (i + 1) % 4 == 0:
        optimizer.step()
        optimizer.zero_grad()
""",
    )
    INVALID = (
        """
import torch
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.zero_grad()  # expect: PG102
    optimizer.step()
""",
        """
import torch
def train_step(model, optimizer, batch):
    loss = model(batch).mean()
    loss.backward()
    model.zero_grad(set_to_none=True)  # expect: PG102
    optimizer.step()
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        reported: set[cst.CSTNode] = set()
        sequences = [loop.events for loop in self.facts.loops]
        sequences += [function.events for function in self.facts.all_functions]
        for events in sequences:
            for clear in _clears_before_step(self.facts.expand(events)):
                if clear.node not in reported:
                    reported.add(clear.node)
                    self.report(
                        clear.node,
                        "gradients are cleared after backward() and before step(), so the "
                        "optimizer steps without the gradients it was meant to apply",
                    )


def _clears_before_step(events: list[GradEvent]) -> list[GradEvent]:
    found = []
    candidate: GradEvent | None = None
    backward_seen = False
    for event in events:
        if event.kind is EventKind.BACKWARD:
            backward_seen, candidate = True, None
        elif event.kind is EventKind.CLEAR and backward_seen:
            candidate = event
        elif event.kind in (EventKind.STEP, EventKind.CLOSURE_STEP):
            if candidate is not None and candidate.target in (None, event.target):
                found.append(candidate)
            candidate, backward_seen = None, False
    return found


class LossAccumulatedWithGraph(StaticRule):
    """
    ## What it catches
    A running total built from loss tensors, `total_loss += loss`, outside `torch.no_grad()`.

    ## Why it matters
    `loss` carries its whole autograd graph. Adding it to a running total keeps every
    iteration's graph (activations included) alive until the total is dropped, so memory
    grows each step until the run is out of memory, and the total itself keeps a graph.

    ## Example
    ```python
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        total_loss += loss
    ```

    ## Fix
    Accumulate a number or a detached tensor: `total_loss += loss.item()` (one host sync per
    step) or `total_loss += loss.detach()` (stays on the device).
    """

    code = "PG103"
    name = "loss-accumulated-with-graph"
    summary = "a running loss total keeps every step's autograd graph alive"
    hint = "accumulate loss.detach() (or loss.item() at logging points)"

    VALID = (
        """
import torch
for x, y in loader:
    loss = criterion(model(x), y)
    loss.backward()
    total_loss += loss.item()
    running += loss.detach()
""",
        # several losses summed on purpose, then back-propagated
        """
import torch
for batch in loader:
    loss = 0
    for head in heads:
        part = criterion(head(batch), batch.y)
        loss += part
    loss.backward()
""",
        """
import torch
with torch.no_grad():
    for x, y in test_loader:
        loss = criterion(model(x), y)
        total += loss
""",
        # the name is reused for a number
        """
import torch
def train_step(batch):
    loss = model(batch).sum()
    loss.backward()
    return loss.item()
for batch in loader:
    loss = train_step(batch)
    total += loss
for x in loader:
    loss = model(x).sum()
    loss.backward()
    loss = loss.item()
    running = running + loss
""",
    )
    INVALID = (
        """
import torch
criterion = torch.nn.CrossEntropyLoss()
for x, y in loader:
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
    total_loss += loss  # expect: PG103
""",
        """
import torch.nn.functional as F
def train(model, loader):
    epoch_loss = 0.0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        epoch_loss += loss * x.size(0)  # expect: PG103
""",
        """
import torch
for x, y in loader:
    loss = model(x).sum()
    loss.backward()
    epoch_loss = epoch_loss + loss  # expect: PG103
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        backward_receivers = _backward_receivers(self.facts)
        for accumulation in self.facts.accumulations:
            function = accumulation.function
            if not accumulation.loops or accumulation.no_grad or function.no_grad:
                continue
            if (function, accumulation.target) in backward_receivers:
                continue  # losses summed on purpose, then back-propagated
            name = next(
                (
                    n
                    for n in _bare_names(accumulation.added)
                    if self._is_loss_tensor(n.value, function, backward_receivers)
                ),
                None,
            )
            if name is not None:
                self.report(
                    accumulation.node,
                    f"'{accumulation.target}' accumulates the loss tensor '{name.value}' with its "
                    "autograd graph, so every step's graph stays in memory",
                    hint=f"add {name.value}.detach() (or {name.value}.item()) instead",
                    fix=self._fix(name),
                )

    def _is_loss_tensor(
        self, name: str, function: Function, backward_receivers: set[tuple[Function, str]]
    ) -> bool:
        """Every assignment of `name` in this scope gives a tensor that carries a graph."""
        values = self.facts.assignments_in(name, function)
        if not values or any(_gives_number(self.facts, value) for value in values):
            return False
        if (function, name) in backward_receivers:
            return True  # backward() only works on a tensor with a graph
        return all(self._carries_graph(value) for value in values)

    def _carries_graph(self, value: cst.BaseExpression) -> bool:
        if isinstance(value, cst.BinaryOperation):
            return self._carries_graph(value.left) or self._carries_graph(value.right)
        if not isinstance(value, cst.Call):
            return False
        if _computes_loss(self.facts, value) or self.facts.kind_of(value.func) is Kind.MODEL:
            return True
        func = value.func
        return isinstance(func, cst.Attribute) and self._carries_graph(func.value)

    def _fix(self, name: cst.Name) -> Fix:
        end = self.context.position(name).end
        return Fix(
            description=f"accumulate {name.value}.detach()",
            edits=(Edit(end.line, end.column + 1, end.line, end.column + 1, ".detach()"),),
            safe=True,
        )


def _backward_receivers(facts: Facts) -> set[tuple[Function, str]]:
    """(scope, name) of every `name.backward()` call."""
    receivers = set()
    for site in facts.calls:
        func = site.node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "backward":
            name = dotted_name(func.value)
            if name is not None:
                receivers.add((site.function, name))
    return receivers


_SCALAR_METHODS = frozenset({"item", "tolist", "detach", "numpy", "cpu"})


def _gives_number(facts: Facts, value: cst.BaseExpression) -> bool:
    """`loss.item()`, `float(loss)`, a literal, or a call to one of the file's functions."""
    if isinstance(value, cst.Integer | cst.Float):
        return True
    if not isinstance(value, cst.Call):
        return False
    func = value.func
    if isinstance(func, cst.Attribute):
        return func.attr.value in _SCALAR_METHODS
    return isinstance(func, cst.Name) and (
        func.value in ("float", "int", "len") or func.value in facts.functions
    )


def _computes_loss(facts: Facts, call: cst.Call) -> bool:
    if facts.kind_of(call.func) is Kind.LOSS:
        return True
    qualified = facts.qualified_name(call.func) or ""
    return qualified.startswith("torch.nn.functional.") and (
        "loss" in qualified or qualified.endswith(("cross_entropy", "entropy"))
    )


def _bare_names(node: cst.BaseExpression) -> list[cst.Name]:
    """Names used as values in an arithmetic expression (not inside calls or attributes)."""
    if isinstance(node, cst.Name):
        return [node]
    if isinstance(node, cst.BinaryOperation):
        return [*_bare_names(node.left), *_bare_names(node.right)]
    if isinstance(node, cst.UnaryOperation):
        return _bare_names(node.expression)
    return []


STATIC_RULES: tuple[type[StaticRule], ...] = (
    GradientsNotCleared,
    ZeroGradBetweenBackwardAndStep,
    LossAccumulatedWithGraph,
)
