"""PG5xx in the code: learning rates no optimizer trains with, schedulers out of order."""

from __future__ import annotations

import libcst as cst

from pitfall_guard.static.facts import EventKind, Facts, GradEvent
from pitfall_guard.static.names import last_part
from pitfall_guard.static.rule import StaticRule
from pitfall_guard.static.torch_api import OPTIMIZER_CLASSES
from pitfall_guard.static.values import number_of

# Learning rates no training of weights comes back from, per optimizer: (low, high) with
# low <= lr < high accepted. The limits are far outside the usual values (the torch.optim
# defaults; Kingma & Ba 2015 for Adam's 1e-3; Zeiler 2012 for Adadelta's 1.0; Goyal et al.
# 2017 for large-batch SGD), so that small models trained at Adam 0.03-0.1 or language
# models at SGD 20 with clipping are not reported: only what is wrong beyond doubt is.
LR_LIMITS: dict[str, tuple[float, float]] = {
    "SGD": (1e-7, 10.0),
    "ASGD": (1e-7, 10.0),
    "Rprop": (1e-7, 10.0),
    "Adagrad": (1e-6, 10.0),
    "Adadelta": (1e-3, 100.0),
    "LBFGS": (1e-5, 100.0),
    "Adam": (1e-8, 1.0),
    "AdamW": (1e-8, 1.0),
    "Adamax": (1e-8, 1.0),
    "NAdam": (1e-8, 1.0),
    "RAdam": (1e-8, 1.0),
    "RMSprop": (1e-8, 1.0),
    "SparseAdam": (1e-8, 1.0),
}
# What each optimizer usually trains with, for the message.
USUAL_RATES: dict[str, str] = {
    "SGD": "0.001 to 0.5",
    "ASGD": "0.001 to 0.5",
    "Rprop": "0.001 to 0.1",
    "Adagrad": "0.001 to 0.1",
    "Adadelta": "0.1 to 1",
    "LBFGS": "0.01 to 1",
}
_ADAPTIVE_USUAL = "1e-5 to 3e-3"
# With gradient clipping, a plain SGD step is bounded: LSTM language models train at lr=20.
_CLIPPING = ("clip_grad_norm_", "clip_grad_value_", "clip_grad_norm", "clip_grad_value")


class LearningRateOutOfRange(StaticRule):
    """
    ## What it catches
    An optimizer over a model's weights built with a learning rate that no training comes
    back from (a literal, a constant of the file, an argparse default such as
    `add_argument("--lr", default=10)` read as `args.lr`, an entry of a literal config
    dict such as `CONFIG["lr"]`, the default of a config class or namespace such as
    `cfg.lr` with `lr: float = 10.0`, and known factors of those): Adam, AdamW and RMSprop at
    1 or more or below 1e-8, SGD at 10 or more (unless the gradients are clipped or the model is
    recurrent: language models train at SGD 20) or below 1e-7, Adadelta
    at 100 or more, and zero or negative rates for any optimizer. The limits sit far outside
    the usual values on purpose: small models do train at Adam 0.03-0.1, so only rates that
    are wrong beyond doubt are reported. Optimizers over inputs rather than weights (deep
    dream, adversarial images: `SGD([image], lr=10)`) and pytest modules, where rates are
    values under test, are left alone.

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
tiny_rnn = torch.optim.Adam(rnn.parameters(), lr=0.1)
""",
        # a default the script overrides is not known; a usual default is fine
        """
import argparse
import torch
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=10)
args = parser.parse_args()
args.lr = args.lr / 1000 if args.scale_lr else args.lr
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
CONFIG = {"lr": 3e-4}
other = torch.optim.AdamW(model.parameters(), lr=CONFIG["lr"])
""",
        # a config class whose default the script replaces, or passes at construction
        """
from dataclasses import dataclass
import torch
@dataclass
class TrainConfig:
    lr: float = 10.0
cfg = TrainConfig(lr=3e-4)
adam = torch.optim.Adam(model.parameters(), lr=cfg.lr)
other = TrainConfig()
other.lr = 1e-3
sgd = torch.optim.SGD(model.parameters(), lr=other.lr)
""",
        # an optimizer over the input image, not over weights
        """
import torch
image = torch.randn(1, 3, 224, 224, requires_grad=True)
dream = torch.optim.SGD([image], lr=12)
""",
        # clipped SGD, as language models train
        """
import torch
optimizer = torch.optim.SGD(model.parameters(), lr=20)
for x, y in loader:
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    optimizer.step()
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
        # values that are not literals where they are used
        """
import argparse
import torch
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=10, help="learning rate")
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)  # expect: PG501
CONFIG = {"optim": {"lr": 1e-9}, "batch_size": 64}
slow = torch.optim.SGD(model.parameters(), lr=CONFIG["optim"]["lr"])  # expect: PG501
""",
        # a config class's default; a namespace; a known factor
        """
import types
from dataclasses import dataclass
import torch
@dataclass
class TrainConfig:
    lr: float = 10.0
    world_size: int = 8
cfg = TrainConfig()
adam = torch.optim.Adam(model.parameters(), lr=cfg.lr)  # expect: PG501
opts = types.SimpleNamespace(lr=5e-10)
slow = torch.optim.SGD(model.parameters(), lr=opts.lr)  # expect: PG501
scaled = torch.optim.SGD(model.parameters(), lr=2.0 * cfg.world_size)  # expect: PG501
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        if self.context.is_test_module:
            return
        called = {last_part(self.facts.qualified_name(s.node.func) or "") for s in self.facts.calls}
        # Clipped SGD, and recurrent language models, train at lr 20 (Zaremba et al. 2014).
        large_sgd = bool(called & {*_CLIPPING, "LSTM", "GRU", "RNN"})
        for site in self.facts.calls:
            qualified = self.facts.qualified_name(site.node.func) or ""
            optimizer = last_part(qualified)
            if not qualified.startswith("torch.optim.") or optimizer not in OPTIMIZER_CLASSES:
                continue
            limits = LR_LIMITS.get(optimizer)
            argument = _lr_argument(site.node)
            if limits is None or argument is None or not self._trains_weights(site.node):
                continue
            number = number_of(argument, self.facts)
            if number is None:
                continue
            low, high = limits
            if large_sgd and optimizer in ("SGD", "ASGD"):
                high = float("inf")
            if number.value <= 0 or not low <= number.value < high:
                message = _message(optimizer, number.value, low, high)
                if number.origin is not None:
                    message += f"; the rate is {number.origin}"
                self.report(argument, message)

    def _trains_weights(self, call: cst.Call) -> bool:
        """Whether the optimizer's parameters visibly come from a module's `.parameters()`."""
        params = _params_argument(call)
        return params is not None and _mentions_parameters(params, self.facts, depth=2)


def _params_argument(call: cst.Call) -> cst.BaseExpression | None:
    for index, arg in enumerate(call.args):
        if (arg.keyword is not None and arg.keyword.value == "params") or (
            arg.keyword is None and index == 0 and not arg.star
        ):
            return arg.value
    return None


def _mentions_parameters(node: cst.BaseExpression, facts: Facts, depth: int) -> bool:
    code = cst.Module([]).code_for_node(node)
    if "parameters(" in code or "param_groups" in code:
        return True
    if depth == 0:
        return False
    names = {n.value for n in _names_in(node)}
    return any(
        _mentions_parameters(value, facts, depth - 1)
        for name in names
        for value in facts.assignments.get(name, [])
    )


def _names_in(node: cst.CSTNode) -> list[cst.Name]:
    found: list[cst.Name] = []

    class Names(cst.CSTVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            found.append(name)

    node.visit(Names())
    return found


def _lr_argument(call: cst.Call) -> cst.BaseExpression | None:
    for index, arg in enumerate(call.args):
        if arg.keyword is not None and arg.keyword.value == "lr":
            return arg.value
        if arg.keyword is None and index == 1:
            return arg.value
    return None


def _message(optimizer: str, value: float, low: float, high: float) -> str:
    usual = USUAL_RATES.get(optimizer, _ADAPTIVE_USUAL)
    if value <= 0:
        return f"{optimizer} learning rate {value:g} is not positive, so nothing is learned"
    if value >= high:
        return (
            f"{optimizer} learning rate {value:g} is beyond doubt too high: at {high:g} or more "
            f"the loss oscillates or diverges (usual values {usual})"
        )
    return (
        f"{optimizer} learning rate {value:g} is beyond doubt too low: below {low:g} the "
        f"weights barely move (usual values {usual})"
    )


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
        # two trainings called one after the other: each orders its own loop
        """
import torch
def train_baseline(model, loader, scheduler):
    for batch in loader:
        model(batch).backward()
        model.step()
        scheduler.step()
def train_integration(model, loader, optimizer, scheduler):
    for batch in loader:
        model(batch).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
for stage in [1, 2]:
    train_baseline(engine, loader, scheduler)
    train_integration(model, loader, optimizer, scheduler)
""",
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
        # Where each event's loops live: a scheduler stepping in a loop of a called function
        # is ordered within that loop (checked on its own), not within the caller's.
        functions_of: dict[cst.CSTNode, set[int]] = {}
        for each in self.facts.loops:
            for event in each.events:
                functions_of.setdefault(event.node, set()).add(id(each.function))
        for expand in (False, True):
            for loop in reversed(self.facts.loops):
                events = self.facts.expand(loop.events) if expand else loop.events
                for early in _scheduler_steps_before_first_step(events):
                    if functions_of.get(early.node, set()) - {id(loop.function)}:
                        continue
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
