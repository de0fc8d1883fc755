"""PG402 in the code: a regression loss between an (N, 1) output and an (N,) target."""

from __future__ import annotations

import libcst as cst

from pitfall_guard.findings import Severity
from pitfall_guard.static.facts import CallSite, Facts, strip_chain
from pitfall_guard.static.names import dotted_name, last_part
from pitfall_guard.static.rule import StaticRule
from pitfall_guard.static.shapes import forward_of, module_layers
from pitfall_guard.static.tensors import string_value

_LOSS_CLASSES = ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss")
_LOSS_FUNCTIONS = ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss")
_ONE_D_FACTORIES = ("torch.randn", "torch.rand", "torch.zeros", "torch.ones", "torch.empty")
_FROM_ARRAY = ("torch.tensor", "torch.as_tensor", "torch.from_numpy", "torch.FloatTensor")


class LossBroadcast(StaticRule):
    """
    ## What it catches
    `nn.MSELoss()`, `nn.L1Loss()`, `nn.SmoothL1Loss()`, `nn.HuberLoss()` or their functional
    forms between a model output of shape (N, 1) — a model whose last layer is
    `nn.Linear(_, 1)` — and a target of shape (N,) that the file shows: a one-dimensional
    `torch.randn(n)`, or a column of a data frame (`torch.tensor(df["price"].values)`).
    Targets reshaped with `.view(-1, 1)` / `.unsqueeze(1)`, and outputs squeezed, are fine.

    ## Why it matters
    The loss broadcasts (N, 1) against (N,) to an (N, N) matrix: every prediction is compared
    with every target, the loss is the distance to the mean target, and the model learns to
    predict the average. PyTorch only warns once, and the loss still goes down.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 1))
    y = torch.tensor(df["price"].values, dtype=torch.float32)
    loss = nn.MSELoss()(model(x), y)
    ```

    ## Fix
    Give both the same shape: `y = y.view(-1, 1)` (or `y.unsqueeze(1)`), or
    `model(x).squeeze(1)`.
    """

    code = "PG402"
    name = "loss-broadcast"
    summary = "a loss's input and target have different shapes that broadcast"
    severity = Severity.ERROR
    hint = "give input and target the same shape: target.view(-1, 1) or output.squeeze(1)"

    VALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 1))
y = torch.tensor(df["price"].values, dtype=torch.float32).view(-1, 1)
z = torch.randn(100)
loss = nn.MSELoss()(model(x), y)
other = nn.functional.mse_loss(model(x).squeeze(1), z)
wide = nn.Sequential(nn.Linear(13, 3))
third = nn.MSELoss()(wide(x), torch.randn(100, 3))
""",
    )
    INVALID = (
        """
import torch
from torch import nn
import torch.nn.functional as F
class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(13, 64)
        self.out = nn.Linear(64, 1)
    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))
model = Regressor()
criterion = nn.MSELoss()
prices = torch.tensor(df["price"].values, dtype=torch.float32)
noise = torch.randn(100)
for epoch in range(10):
    predictions = model(features)
    loss = criterion(predictions, prices)  # expect: PG402
    other = F.l1_loss(model(features), noise)  # expect: PG402
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        for site in self.facts.calls:
            if not self._is_regression_loss(site.node) or len(site.node.args) < 2:
                continue
            output, target = site.node.args[0].value, site.node.args[1].value
            model = self._column_output_of(output, site)
            if model is not None and self._is_one_d(target, site):
                self.report(
                    site.node,
                    f"'{model}' outputs shape (N, 1) and the target "
                    f"'{cst.Module([]).code_for_node(target)}' has shape (N,): the loss "
                    "broadcasts them to (N, N), comparing every prediction with every target",
                )

    def _is_regression_loss(self, call: cst.Call) -> bool:
        qualified = self.facts.qualified_name(call.func) or ""
        if qualified.startswith("torch.nn.functional."):
            return last_part(qualified) in _LOSS_FUNCTIONS
        constructor = self.facts.constructors.get(dotted_name(call.func) or "")
        if constructor is None and isinstance(call.func, cst.Call):
            constructor = call.func  # `nn.MSELoss()(output, target)`
        if constructor is None:
            return False
        made_by = self.facts.qualified_name(constructor.func) or ""
        return made_by.startswith("torch.nn.") and last_part(made_by) in _LOSS_CLASSES

    def _column_output_of(self, output: cst.BaseExpression, site: CallSite) -> str | None:
        """The model whose call is `output` (or the name it is assigned to), when its last
        layer is `nn.Linear(_, 1)`."""
        if isinstance(output, cst.Name):
            values = site.function.assignments.get(output.value, [])
            if len(values) != 1:
                return None
            output = values[0]
        if not isinstance(output, cst.Call) or strip_chain(output)[1]:
            return None
        model = dotted_name(output.func)
        constructor = self.facts.constructors.get(model or "")
        if model is None or constructor is None:
            return None
        return model if _ends_in_one_output(self.facts, constructor) else None

    def _is_one_d(self, target: cst.BaseExpression, site: CallSite) -> bool:
        if isinstance(target, cst.Name):
            values = site.function.assignments.get(target.value) or self.facts.assignments.get(
                target.value, []
            )
            return bool(values) and all(_one_d_value(self.facts, v) for v in values)
        return _one_d_value(self.facts, target)


def _ends_in_one_output(facts: Facts, constructor: cst.Call) -> bool:
    qualified = facts.qualified_name(constructor.func) or ""
    if qualified == "torch.nn.Sequential" and constructor.args:
        return _is_linear_to_one(facts, constructor.args[-1].value)
    info = facts.classes.get(qualified)
    if info is None or not facts.is_module_class(qualified):
        return False
    forward = forward_of(info.node)
    last = forward.body.body[-1] if forward is not None and forward.body.body else None
    if not isinstance(last, cst.SimpleStatementLine) or not isinstance(last.body[0], cst.Return):
        return False
    returned = last.body[0].value
    if not isinstance(returned, cst.Call):
        return False
    name = dotted_name(returned.func) or ""
    layer = module_layers(info.node).get(name[5:]) if name.startswith("self.") else None
    return layer is not None and _is_linear_to_one(facts, layer)


def _is_linear_to_one(facts: Facts, layer: cst.BaseExpression) -> bool:
    if not isinstance(layer, cst.Call) or facts.qualified_name(layer.func) != "torch.nn.Linear":
        return False
    out = layer.args[1].value if len(layer.args) > 1 and layer.args[1].keyword is None else None
    for arg in layer.args:
        if arg.keyword is not None and arg.keyword.value == "out_features":
            out = arg.value
    return isinstance(out, cst.Integer) and out.value == "1"


def _one_d_value(facts: Facts, value: cst.BaseExpression) -> bool:
    """`torch.randn(n)` with one size, or an array of one data-frame column."""
    if not isinstance(value, cst.Call):
        return False
    qualified = facts.qualified_name(value.func) or ""
    positional = [arg for arg in value.args if arg.keyword is None]
    if qualified in _ONE_D_FACTORIES:
        return len(positional) == 1 and isinstance(positional[0].value, cst.Integer | cst.Name)
    if qualified in _FROM_ARRAY and positional:
        return _is_column(positional[0].value)
    return False


def _is_column(node: cst.BaseExpression) -> bool:
    """`df["price"].values` or `df["price"].to_numpy()`: one column, one dimension."""
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        if node.func.attr.value != "to_numpy":
            return False
        node = node.func.value
    elif isinstance(node, cst.Attribute) and node.attr.value == "values":
        node = node.value
    else:
        return False
    if not isinstance(node, cst.Subscript) or len(node.slice) != 1:
        return False
    index = node.slice[0].slice
    return isinstance(index, cst.Index) and string_value(index.value) is not None
