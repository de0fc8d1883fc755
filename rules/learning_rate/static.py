"""PG5xx in the code: learning rates no optimizer trains with, schedulers out of order."""

from __future__ import annotations

import libcst as cst

from pitfall_guard.static.facts import EventKind, Facts, GradEvent
from pitfall_guard.static.names import last_part
from pitfall_guard.static.rule import StaticRule
from pitfall_guard.static.torch_api import OPTIMIZER_CLASSES

# Sane learning-rate ranges per optimizer, (low, high), both inclusive. Sources: the defaults
# and docs of torch.optim; Kingma & Ba 2015 (Adam, alpha = 1e-3); Loshchilov & Hutter 2019
# (AdamW); Zeiler 2012 (Adadelta, lr = 1.0); Goyal et al. 2017 (large-batch SGD: 0.1 per 256
# samples, scaled linearly); Smith 2017 (the LR range test finds useful rates within these).
LR_RANGES: dict[str, tuple[float, float]] = {
    "SGD": (1e-5, 1.0),
    "ASGD": (1e-5, 1.0),
    "Rprop": (1e-5, 1.0),
    "Adagrad": (1e-4, 1.0),
    "Adadelta": (1e-2, 10.0),
    "LBFGS": (1e-3, 10.0),
    "Adam": (1e-6, 1e-2),
    "AdamW": (1e-6, 1e-2),
    "Adamax": (1e-6, 1e-2),
    "NAdam": (1e-6, 1e-2),
    "RAdam": (1e-6, 1e-2),
    "RMSprop": (1e-6, 1e-2),
    "SparseAdam": (1e-6, 1e-2),
}


def literal_number(node: cst.BaseExpression, facts: Facts, depth: int = 2) -> float | None:
    """The value of a numeric literal, simple arithmetic on literals, or a constant's name."""
    if isinstance(node, cst.Integer | cst.Float):
        return float(node.evaluated_value)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        value = literal_number(node.expression, facts, depth)
        return None if value is None else -value
    if isinstance(node, cst.BinaryOperation):
        left = literal_number(node.left, facts, depth)
        right = literal_number(node.right, facts, depth)
        if left is None or right is None:
            return None
        if isinstance(node.operator, cst.Multiply):
            return left * right
        if isinstance(node.operator, cst.Divide) and right:
            return left / right
        if isinstance(node.operator, cst.Power) and abs(right) < 100:
            return float(left**right)
        return None
    if isinstance(node, cst.Name) and depth > 0:
        values = facts.assignments.get(node.value, [])
        if len(values) == 1:
            return literal_number(values[0], facts, depth - 1)
    return None


class LearningRateOutOfRange(StaticRule):
    """
    ## What it catches
    An optimizer built with a literal learning rate far outside what that optimizer trains
    with: SGD outside 1e-5..1, Adam/AdamW/RMSprop outside 1e-6..1e-2, Adadelta outside
    0.01..10 (its usual value is 1.0), and zero or negative rates for any optimizer.

    ## Why it matters
    Too high, the loss oscillates, explodes to NaN, or the model collapses to predicting one
    class; too low, the loss barely moves and a week of GPU time buys nothing. Neither raises
    an error. Adaptive optimizers (Adam) normalise the step, so the rate that suits SGD (0.1)
    is already far too high for them.

    ## Example
    ```python
    optimizer = torch.optim.Adam(model.parameters(), lr=1)
    ```

    ## Fix
    Start from the usual value (Adam/AdamW 1e-3, SGD with momentum 0.01 to 0.1, Adadelta
    1.0) and tune from there, for instance with a learning-rate range test (Smith 2017).
    Sources: torch.optim defaults; Kingma & Ba 2015; Zeiler 2012; Goyal et al. 2017.
    """

    code = "PG501"
    name = "learning-rate-out-of-range"
    summary = "a literal learning rate far outside the optimizer's sane range"
    hint = "start from the optimizer's usual rate (Adam 1e-3, SGD 0.01-0.1) and tune"

    VALID = (
        """
import torch
sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
adam = torch.optim.Adam(model.parameters(), lr=1e-3)
adadelta = torch.optim.Adadelta(model.parameters(), lr=1.0)
default = torch.optim.AdamW(model.parameters())
from_args = torch.optim.SGD(model.parameters(), lr=args.lr)
""",
    )
    INVALID = (
        """
import torch
from torch import optim
optimizer = optim.SGD(model.parameters(), lr=10)  # expect: PG501
adam = torch.optim.Adam(model.parameters(), lr=1)  # expect: PG501
LR = 1e-9
slow = torch.optim.AdamW(
    model.parameters(),
    lr=LR,  # expect: PG501
)
positional = optim.SGD(model.parameters(), 0.0)  # expect: PG501
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        for site in self.facts.calls:
            qualified = self.facts.qualified_name(site.node.func) or ""
            optimizer = last_part(qualified)
            if not qualified.startswith("torch.optim.") or optimizer not in OPTIMIZER_CLASSES:
                continue
            bounds = LR_RANGES.get(optimizer)
            argument = _lr_argument(site.node)
            if bounds is None or argument is None:
                continue
            value = literal_number(argument, self.facts)
            if value is None:
                continue
            low, high = bounds
            if value <= 0 or not low <= value <= high:
                self.report(argument, _message(optimizer, value, low, high))


def _lr_argument(call: cst.Call) -> cst.BaseExpression | None:
    for index, arg in enumerate(call.args):
        if arg.keyword is not None and arg.keyword.value == "lr":
            return arg.value
        if arg.keyword is None and index == 1:
            return arg.value
    return None


def _message(optimizer: str, value: float, low: float, high: float) -> str:
    if value <= 0:
        problem = "is not positive, so nothing is learned"
    elif value > high:
        problem = f"is above {high:g}, where the loss oscillates or diverges"
    else:
        problem = f"is below {low:g}, where training barely moves"
    return f"{optimizer} learning rate {value:g} {problem} (usual range {low:g} to {high:g})"


class SchedulerBeforeOptimizer(StaticRule):
    """
    ## What it catches
    `scheduler.step()` called before `optimizer.step()` in the same iteration of a training
    loop (directly or inside a function the loop calls).

    ## Why it matters
    Since PyTorch 1.1 the scheduler must step after the optimizer. Stepping it first skips
    the first value of the schedule: the initial learning rate is never used, warm-ups start
    one step late, and step schedules decay one epoch early. PyTorch only warns once.

    ## Example
    ```python
    for epoch in range(epochs):
        scheduler.step()
        train_one_epoch(model, loader, optimizer)
    ```

    ## Fix
    Step the scheduler after the optimizer: at the end of the epoch for epoch-based
    schedules, right after `optimizer.step()` for per-batch ones.
    """

    code = "PG503"
    name = "scheduler-before-optimizer"
    summary = "scheduler.step() before optimizer.step() skips the first learning rate"
    hint = "call scheduler.step() after optimizer.step()"

    VALID = (
        """
import torch
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
for epoch in range(3):
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    scheduler.step()
""",
    )
    INVALID = (
        """
import torch
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
def train(model, loader, optimizer):
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
for epoch in range(3):
    scheduler.step()  # expect: PG503
    train(model, loader, optimizer)
""",
        """
import torch
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=100)
for x, y in loader:
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    scheduler.step()  # expect: PG503
    optimizer.step()
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        reported: set[cst.CSTNode] = set()
        for expand in (False, True):
            for loop in reversed(self.facts.loops):
                events = self.facts.expand(loop.events) if expand else loop.events
                for early in _scheduler_steps_before_first_step(events):
                    if early.node not in reported:
                        reported.add(early.node)
                        self.report(
                            early.node,
                            f"'{early.target}' steps before the optimizer in the loop at line "
                            f"{self.context.line_of(loop.node)}: the first learning rate of the "
                            "schedule is skipped",
                        )


def _scheduler_steps_before_first_step(events: list[GradEvent]) -> list[GradEvent]:
    early: list[GradEvent] = []
    for event in events:
        if event.kind in (EventKind.STEP, EventKind.CLOSURE_STEP):
            return early
        if event.kind is EventKind.SCHEDULER_STEP:
            early.append(event)
    return []  # no optimizer step in this loop: nothing to be out of order with


STATIC_RULES: tuple[type[StaticRule], ...] = (LearningRateOutOfRange, SchedulerBeforeOptimizer)
