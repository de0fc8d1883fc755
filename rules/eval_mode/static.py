"""PG3xx in the code: model.eval(), torch.no_grad(), and model.train() afterwards."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import libcst as cst

from pitfall_guard.findings import Severity
from pitfall_guard.static.facts import (
    CallSite,
    EventKind,
    Facts,
    Function,
    GradEvent,
    Kind,
    Loop,
    argument_for,
    calls_within,
    strip_chain,
)
from pitfall_guard.static.names import dotted_name, last_part
from pitfall_guard.static.rule import StaticRule
from pitfall_guard.static.torch_api import MODE_DEPENDENT_LAYERS, MODE_DEPENDENT_WITH

_EVAL_FUNCTION = re.compile(
    r"^_?(evaluate|evaluation|eval|validate|validation|val|valid|test|testing|predict|"
    r"inference|infer)(_\w+)?$|evaluat|validat",
    re.IGNORECASE,
)
_EVAL_LOADER = re.compile(r"val|test|eval|holdout", re.IGNORECASE)
_LOOP_WRAPPERS = ("enumerate", "tqdm", "tqdm.tqdm", "iter")


@dataclass(frozen=True)
class EvalRegion:
    """Code that evaluates a model: an evaluation function, or a loop over a test loader."""

    description: str
    forward: CallSite
    model: str
    function: Function | None
    loop: Loop | None


def _trains(events: Sequence[GradEvent]) -> bool:
    return any(
        event.kind in (EventKind.STEP, EventKind.BACKWARD, EventKind.CLOSURE_STEP)
        for event in events
    )


def _model_call(facts: Facts, site: CallSite) -> str | None:
    name = dotted_name(site.node.func)
    if name is None or name in facts.classes or facts.kind_of(site.node.func) is not Kind.MODEL:
        return None  # `Net()` builds a model, it runs none
    return name


def _unwrap_loop_iterable(node: cst.BaseExpression | None) -> cst.BaseExpression | None:
    while isinstance(node, cst.Call) and dotted_name(node.func) in _LOOP_WRAPPERS and node.args:
        node = node.args[0].value
    return node


def evaluation_regions(facts: Facts) -> Iterator[EvalRegion]:
    """Every evaluation function and loop of the file with its first forward pass."""
    eval_functions = set()
    for function in facts.all_functions:
        if (
            function.node is None
            or function.name.startswith("test_")
            # Lightning switches modes and disables grad around its *_step hooks itself.
            or (function.class_name is not None and facts.is_lightning_class(function.class_name))
            or not _EVAL_FUNCTION.search(function.name)
            or _trains(facts.expand(function.events))
        ):
            continue
        site = next(
            (s for s in facts.calls if s.function is function and _model_call(facts, s)), None
        )
        if site is not None and not _is_shape_probe(facts, site):
            eval_functions.add(function)
            model = _model_call(facts, site) or ""
            yield EvalRegion(f"{function.name}()", site, model, function, None)
    for loop in facts.loops:
        iterable = _unwrap_loop_iterable(loop.iterable)
        name = dotted_name(iterable) if iterable is not None else None
        if (
            iterable is None
            or name is None
            or loop.function in eval_functions
            or not _EVAL_LOADER.search(last_part(name))
            or facts.kind_of(iterable) is not Kind.LOADER
            or _trains(facts.expand(loop.events))
        ):
            continue
        site = next((s for s in facts.calls if loop in s.loops and _model_call(facts, s)), None)
        if site is not None:
            model = _model_call(facts, site) or ""
            yield EvalRegion(f"the loop over '{name}'", site, model, loop.function, loop)


# Tensors made from nothing: a forward on them checks shapes, it evaluates nothing.
_MADE_UP_TENSORS = frozenset(
    {
        "torch.randn",
        "torch.rand",
        "torch.randint",
        "torch.zeros",
        "torch.ones",
        "torch.empty",
        "torch.full",
        "torch.arange",
        "torch.Tensor",
        "torch.FloatTensor",
    }
)


def _is_shape_probe(facts: Facts, site: CallSite) -> bool:
    """`y = net(torch.randn(1, 3, 32, 32)); print(y.size())`: a smoke test, not an evaluation."""
    if not site.node.args or site.loops:
        return False
    value = site.node.args[0].value
    if isinstance(value, cst.Name):
        # Made up in the function itself: data made up at the top of a script stands in for
        # a real data set.
        values = site.function.assignments.get(value.value, [])
        return bool(values) and all(_made_up(facts, v) for v in values)
    return _made_up(facts, value)


def _made_up(facts: Facts, value: cst.BaseExpression) -> bool:
    value, _ = strip_chain(value)
    while isinstance(value, cst.Call) and last_part(dotted_name(value.func) or "") == "Variable":
        if not value.args:
            return False
        value, _ = strip_chain(value.args[0].value)
    return isinstance(value, cst.Call) and facts.qualified_name(value.func) in _MADE_UP_TENSORS


def _switches_to_eval(facts: Facts, region: EvalRegion) -> bool:
    if region.loop is not None:
        scopes = [region.loop.function] if region.loop.function else []
    else:
        scopes = [region.function] if region.function else []
        if region.function is not None and region.function.node is not None:
            scopes += [site.function for site in facts.callers_of(region.function.name)]
    # A script that switches to eval() at its top level before evaluating counts too.
    scopes.append(facts.module_scope)
    return any(
        event.kind is EventKind.EVAL_MODE
        for scope in scopes
        if scope is not None
        for event in facts.expand(scope.events)
    )


def has_mode_dependent_layers(facts: Facts, model: str, function: Function | None) -> bool:
    """Whether the file shows that `model`, as used in `function`, has Dropout/BatchNorm.

    The model is followed to its constructor: a binding of the file, or what the file's
    callers pass for a parameter. A model whose layers the file does not show is not
    reported: eval() may change nothing for it.
    """
    return _shows_mode_layers(facts, model, function, depth=3)


def _shows_mode_layers(facts: Facts, model: str, function: Function | None, depth: int) -> bool:
    if depth == 0:
        return False
    callers = facts.callers_of(function.name) if function is not None else []
    if function is not None and function.node is not None and model in function.parameter_names():
        if not callers:
            # Never called here: the script's own model of that name is the likely one.
            return _shows_mode_layers(facts, model, None, depth - 1)
        for site in callers:
            passed = argument_for(site.node, function, model)
            if isinstance(passed, cst.Call) and _constructor_shows_mode_layers(facts, passed):
                return True
            name = dotted_name(passed) if passed is not None else None
            if name is not None and _shows_mode_layers(facts, name, site.function, depth - 1):
                return True
        return False
    constructor = facts.constructors.get(model)
    if constructor is None:
        values = facts.assignments.get(model, [])
        calls = [strip_chain(value)[0] for value in values]
        return any(
            isinstance(call, cst.Call) and _constructor_shows_mode_layers(facts, call)
            for call in calls
        )
    return _constructor_shows_mode_layers(facts, constructor)


def _constructor_shows_mode_layers(
    facts: Facts, constructor: cst.Call, follow_builders: bool = True
) -> bool:
    qualified = facts.qualified_name(constructor.func) or ""
    if qualified.startswith("torchvision.models."):
        return True
    builder = facts.functions.get(qualified)
    if builder is not None and builder.node is not None and follow_builders:
        # `build_model(arch)`: a function of the file that constructs the model.
        return any(
            _constructor_shows_mode_layers(facts, call, follow_builders=False)
            for call in calls_within(builder.node)
            if call is not constructor
        )
    if qualified in facts.classes:
        return facts.is_module_class(qualified) and _mentions_mode_layers(
            facts, facts.classes[qualified].node
        )
    if qualified.startswith("torch.nn."):
        return _mentions_mode_layers(facts, constructor)
    return False


def _mentions_mode_layers(facts: Facts, node: cst.CSTNode) -> bool:
    code = cst.Module([]).code_for_node(node)
    if any(re.search(rf"\b{layer}\b", code) for layer in MODE_DEPENDENT_LAYERS) or re.search(
        r"\bF\.dropout\b|functional\.dropout", code
    ):
        return True
    return any(map(_mode_dependent_by_argument, calls_within(node)))


def _mode_dependent_by_argument(call: cst.Call) -> bool:
    """`nn.LSTM(..., dropout=0.2)`, `nn.InstanceNorm2d(8, track_running_stats=True)`."""
    keyword = MODE_DEPENDENT_WITH.get(last_part(dotted_name(call.func) or ""))
    if keyword is None:
        return False
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            value = arg.value
            if isinstance(value, cst.Integer | cst.Float):
                return float(value.evaluated_value) > 0
            if isinstance(value, cst.Name) and value.value in ("True", "False"):
                return value.value == "True"
            return True  # set from a variable: it may well be on
    return False


class EvalWithoutEvalMode(StaticRule):
    """
    ## What it catches
    Evaluation code (a function named like `evaluate`/`validate`/`test`, or a loop over a
    validation or test loader) that runs the model without `model.eval()` first, when the
    file shows that the model has Dropout or BatchNorm layers (recurrent layers count with
    `dropout` > 0). A model whose layers the file does not show (imported from elsewhere) is
    left alone, and so is a shape smoke test (`net(torch.randn(1, 3, 32, 32))`).

    ## Why it matters
    In training mode Dropout still zeroes activations at random and BatchNorm normalises with
    the statistics of each test batch (and updates its running averages with test data).
    Accuracy comes out lower and noisy, and results depend on the batch size.

    ## Example
    ```python
    def evaluate(model, loader):
        with torch.no_grad():
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum()
    ```

    ## Fix
    Call `model.eval()` before evaluating (and `model.train()` before training again).
    """

    code = "PG301"
    name = "evaluation-in-train-mode"
    summary = "evaluation without model.eval(): Dropout and BatchNorm stay in training mode"
    hint = "call model.eval() before evaluating, and model.train() before training again"

    VALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(784, 128), nn.Dropout(0.2), nn.Linear(128, 10))
def evaluate(model, loader):
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            model(x)
""",
        # the caller switches the mode
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(784, 10), nn.BatchNorm1d(10))
def validate(model, loader):
    return [model(x) for x, y in loader]
model.eval()
with torch.no_grad():
    validate(model, val_loader)
""",
        # no Dropout or BatchNorm: eval() changes nothing
        """
import torch
from torch import nn
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
with torch.no_grad():
    for x, y in test_loader:
        model(x)
""",
        # a shape smoke test; an LSTM without dropout; a model the file does not show
        """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
def test():
    net = Net()
    y = net(torch.randn(2, 3, 32, 32))
    print(y.size())
""",
        """
import torch
from torch import nn
class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 64, num_layers=2, batch_first=True)
        self.fc = nn.Linear(64, 10)
model = Tagger()
with torch.no_grad():
    for x, y in test_loader:
        model(x)
""",
        """
import torch
from model import Net
model = Net()
with torch.no_grad():
    for x, y in test_loader:
        model(x)
""",
        # eval() at the top level of the script, before the evaluation function runs
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(784, 128), nn.Dropout(0.5), nn.Linear(128, 10))
def test(loader):
    with torch.no_grad():
        return [model(x) for x, _ in loader]
model.eval()
test(test_loader)
""",
    )
    INVALID = (
        """
import torch
from torch import nn
class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 64, num_layers=2, dropout=0.3)
model = Tagger()
with torch.no_grad():
    for x, y in test_loader:
        model(x)  # expect: PG301
""",
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(784, 128), nn.Dropout(0.2), nn.Linear(128, 10))
def evaluate(model, loader):
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum()  # expect: PG301
    return correct
""",
        """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(8)
net = Net()
with torch.no_grad():
    for images, labels in test_loader:
        outputs = net(images)  # expect: PG301
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        for region in evaluation_regions(self.facts):
            # eval() changes nothing without Dropout/BatchNorm; an unseen model may have none.
            if not has_mode_dependent_layers(self.facts, region.model, region.forward.function):
                continue
            if not _switches_to_eval(self.facts, region):
                self.report(
                    region.forward.node,
                    f"{region.description} runs '{region.model}' without {region.model}.eval(): "
                    "Dropout and BatchNorm still behave as in training, so the results are off",
                    hint=f"call {region.model}.eval() before evaluating",
                )


class EvalWithGrad(StaticRule):
    """
    ## What it catches
    Evaluation code (a function named like `evaluate`/`validate`/`test`, or a loop over a
    validation or test loader) whose forward passes run with gradients enabled: no
    `torch.no_grad()`, `torch.inference_mode()` or decorator. A shape smoke test (one
    forward on `torch.randn(...)`) is not an evaluation.

    ## Why it matters
    Every forward pass records an autograd graph that nothing will use: evaluation needs
    much more memory (often out of memory on large batches) and runs slower.

    ## Example
    ```python
    model.eval()
    for x, y in test_loader:
        outputs = model(x)
    ```

    ## Fix
    Wrap evaluation in `with torch.inference_mode():` (or `torch.no_grad()`), or decorate the
    function with `@torch.no_grad()`.
    """

    code = "PG302"
    name = "evaluation-with-grad"
    summary = "evaluation builds autograd graphs nobody uses (no torch.no_grad())"
    severity = Severity.WARNING
    hint = "wrap the evaluation in `with torch.inference_mode():` (or torch.no_grad())"

    VALID = (
        """
import torch
@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    return [model(x) for x, _ in loader]
""",
        """
import torch
def test(model, test_loader):
    model.eval()
    with torch.inference_mode():
        for data, target in test_loader:
            output = model(data)
""",
        """
import torch
def evaluate(model, loader):
    return [model(x) for x, _ in loader]
with torch.no_grad():
    evaluate(model, val_loader)
""",
        """
import torch
import lightning.pytorch as pl
import torch.nn.functional as F
class LitClassifier(pl.LightningModule):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.model(x), y))
""",
        """
import torch
def test():
    net = ResNet18()
    x = torch.randn(1, 3, 32, 32)
    print(net(x).size())
""",
    )
    INVALID = (
        """
import torch
def test(model, test_loader):
    model.eval()
    for data, target in test_loader:
        output = model(data)  # expect: PG302
""",
        """
import torch
model.eval()
for x, y in val_loader:
    predictions = model(x)  # expect: PG302
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        for region in evaluation_regions(self.facts):
            if not self.facts.grad_disabled(region.forward):
                self.report(
                    region.forward.node,
                    f"{region.description} runs '{region.model}' with gradients enabled: each "
                    "forward pass builds an autograd graph that is never used",
                )


class TrainModeNotRestored(StaticRule):
    """
    ## What it catches
    A training loop that calls `model.eval()` (directly or in an evaluation function it
    calls) and keeps training without ever calling `model.train()` again.

    ## Why it matters
    After the first evaluation the rest of training runs in eval mode: Dropout is off and
    BatchNorm stops updating its statistics, so the model overfits or trains on frozen
    statistics, with no error.

    ## Example
    ```python
    model.train()
    for epoch in range(10):
        train_one_epoch(model, loader, optimizer)
        model.eval()
        evaluate(model, val_loader)
    ```

    ## Fix
    Call `model.train()` at the start of every epoch (or right after evaluating).
    """

    code = "PG303"
    name = "train-mode-not-restored"
    summary = "model.eval() inside training, with no model.train() to undo it"
    hint = "call model.train() at the start of each epoch (or after evaluating)"

    VALID = (
        """
import torch
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(3):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    model.eval()
    evaluate(model)
""",
        # the teacher of a distillation is never trained
        """
import torch
optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
for x, y in loader:
    teacher.eval()
    optimizer.zero_grad()
    loss_fn(student(x), teacher(x)).backward()
    optimizer.step()
""",
    )
    INVALID = (
        """
import torch
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
def evaluate(model, loader):
    model.eval()  # expect: PG303
    with torch.no_grad():
        return sum(model(x).sum() for x in loader)
model.train()
for epoch in range(3):
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    evaluate(model, val_loader)
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        trained = self.facts.trained_models()
        reported: set[cst.CSTNode] = set()
        for loop in reversed(self.facts.loops):
            events = self.facts.expand(loop.events)
            if not any(e.kind is EventKind.STEP for e in events):
                continue
            if any(e.kind is EventKind.TRAIN_MODE for e in events):
                continue
            for event in events:
                if event.kind is not EventKind.EVAL_MODE or event.node in reported:
                    continue
                if not _is_trained_model(self.facts, event.target, trained):
                    continue
                reported.add(event.node)
                self.report(
                    event.node,
                    f"'{event.target}' is switched to eval mode inside the training loop at line "
                    f"{self.context.line_of(loop.node)} and never back to train mode, so the rest "
                    "of training runs with Dropout off and BatchNorm frozen",
                )


def _is_trained_model(facts: Facts, name: str | None, trained: set[str]) -> bool:
    """Whether `name` is a model this file trains (not a frozen teacher, not `expr.eval()`)."""
    if name is None:
        return False
    looks_like_model = facts.kind_of_name(name) is Kind.MODEL
    if not trained:
        return looks_like_model
    is_parameter = any(name in function.parameter_names() for function in facts.all_functions)
    return name in trained or (is_parameter and looks_like_model)


STATIC_RULES: tuple[type[StaticRule], ...] = (
    EvalWithoutEvalMode,
    EvalWithGrad,
    TrainModeNotRestored,
)
