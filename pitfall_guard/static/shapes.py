"""Shape inference through layers built from literals, for the static shape rules.

Shapes are per sample (no batch dimension). Only what can be read for sure is inferred:
any argument that is not a literal, any layer or call not known here, and any statement
other than a plain assignment or return in `forward`, ends the inference silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import libcst as cst

from pitfall_guard.static.facts import Facts
from pitfall_guard.static.names import dotted_name, last_part

Shape = tuple[int, ...]

SHAPE_PRESERVING = frozenset(
    {
        "ReLU",
        "ReLU6",
        "LeakyReLU",
        "GELU",
        "SiLU",
        "ELU",
        "SELU",
        "CELU",
        "Mish",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "LogSoftmax",
        "Hardswish",
        "Hardsigmoid",
        "Hardtanh",
        "PReLU",
        "Softplus",
        "Identity",
        "Dropout",
        "Dropout1d",
        "Dropout2d",
        "Dropout3d",
        "AlphaDropout",
        "relu",
        "relu_",
        "relu6",
        "leaky_relu",
        "gelu",
        "silu",
        "elu",
        "selu",
        "mish",
        "sigmoid",
        "tanh",
        "softmax",
        "log_softmax",
        "dropout",
        "dropout2d",
        "hardswish",
    }
)


class Mismatch(Exception):
    """The input reaching a layer does not fit it."""

    def __init__(self, node: cst.CSTNode, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.hint = hint


class Unknown(Exception):
    """Something the inference cannot read; it stops without a finding."""


# The input size is not known: the first Linear layer's in_features will define it.
UNKNOWN_INPUT: Shape = ()


def format_shape(shape: Shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def literal_int(node: cst.BaseExpression) -> int:
    if isinstance(node, cst.Integer):
        return int(node.value, 0)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        return -literal_int(node.expression)
    if isinstance(node, cst.BinaryOperation):
        left, right = literal_int(node.left), literal_int(node.right)
        if isinstance(node.operator, cst.Multiply):
            return left * right
        if isinstance(node.operator, cst.Add):
            return left + right
        if isinstance(node.operator, cst.Subtract):
            return left - right
        if isinstance(node.operator, cst.FloorDivide) and right:
            return left // right
    raise Unknown


def _pair(node: cst.BaseExpression) -> tuple[int, int]:
    if isinstance(node, cst.Tuple) and len(node.elements) == 2:
        first, second = node.elements
        return literal_int(first.value), literal_int(second.value)
    value = literal_int(node)
    return value, value


@dataclass
class LayerCall:
    """A layer constructor call with its arguments, positional then by keyword."""

    node: cst.Call
    kind: str
    positional: list[cst.BaseExpression] = field(default_factory=list)
    keywords: dict[str, cst.BaseExpression] = field(default_factory=dict)

    @classmethod
    def read(cls, facts: Facts, node: cst.Call) -> LayerCall | None:
        qualified = facts.qualified_name(node.func) or ""
        if not qualified.startswith("torch.nn."):
            return None
        layer = cls(node, last_part(qualified))
        for arg in node.args:
            if arg.star:
                raise Unknown
            if arg.keyword is None:
                layer.positional.append(arg.value)
            else:
                layer.keywords[arg.keyword.value] = arg.value
        return layer

    def arg(self, index: int, name: str) -> cst.BaseExpression | None:
        if name in self.keywords:
            return self.keywords[name]
        if index < len(self.positional):
            return self.positional[index]
        return None

    def int_arg(self, index: int, name: str, default: int | None = None) -> int:
        value = self.arg(index, name)
        if value is None:
            if default is None:
                raise Unknown
            return default
        return literal_int(value)

    def pair_arg(self, index: int, name: str, default: int | None = None) -> tuple[int, int]:
        value = self.arg(index, name)
        if value is None:
            if default is None:
                raise Unknown
            return default, default
        return _pair(value)

    def describe(self) -> str:
        return cst.Module([]).code_for_node(self.node)


def _conv_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    if kernel < 1 or stride < 1 or dilation < 1:
        raise Unknown  # invalid arguments: PyTorch itself will say so
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _pool_size(size: int, kernel: int, stride: int, padding: int, ceil: bool) -> int:
    if kernel < 1 or stride < 1:
        raise Unknown
    value = (size + 2 * padding - kernel) / stride + 1
    return math.ceil(value) if ceil else math.floor(value)


class ShapeTracer:
    """Follows a per-sample shape through layers, recording each step for the message."""

    def __init__(self, facts: Facts, shape: Shape, strict: bool = False) -> None:
        self.facts = facts
        self.trace: list[str] = [format_shape(shape)] if shape else []
        # Until one layer has accepted the input, a mismatch more likely means that this
        # model is not the one fed with that input, and stays silent; unless `strict` (the
        # model is the one trained on a dataset whose shape is known).
        self.accepted = 1 if strict else 0

    def note(self, label: str, shape: Shape) -> Shape:
        self.trace.append(f"{label} {format_shape(shape)}")
        return shape

    def mismatch(self, layer: LayerCall, expected: str, shape: Shape) -> Exception:
        if not self.accepted:
            return Unknown()
        return Mismatch(
            layer.node,
            f"{layer.describe()} expects {expected}, but the input reaching it has shape "
            f"{format_shape(shape)} per sample (shapes so far: {' -> '.join(self.trace)})",
        )

    def layer(self, node: cst.BaseExpression, shape: Shape, label: str = "") -> Shape:
        if not isinstance(node, cst.Call):
            raise Unknown
        layer = LayerCall.read(self.facts, node)
        if layer is None:
            built = builder_result(self.facts, node)
            if built is None:
                raise Unknown
            try:
                return self.layer(built, shape, label)
            except Mismatch as mismatch:  # said at the builder's call, which has a place
                raise Mismatch(node, str(mismatch), mismatch.hint) from None
        label = label or layer.kind
        kind = layer.kind
        if shape == UNKNOWN_INPUT and kind not in ("Sequential", "Linear", *SHAPE_PRESERVING):
            raise Unknown
        if kind == "Sequential":
            for index, child in enumerate(layer.positional):
                shape = self.layer(child, shape, f"{label}[{index}]")
            return shape
        if kind in SHAPE_PRESERVING:
            return shape
        if kind == "Flatten":
            if layer.int_arg(0, "start_dim", 1) != 1 or layer.int_arg(1, "end_dim", -1) != -1:
                raise Unknown
            return self.note(label, (math.prod(shape),))
        if kind == "Linear":
            in_features, out_features = (
                layer.int_arg(0, "in_features"),
                layer.int_arg(1, "out_features"),
            )
            if shape == UNKNOWN_INPUT:
                shape = (in_features,)
                self.trace.append(f"input {format_shape(shape)}")
            elif len(shape) > 1 and math.prod(shape) == in_features and self.accepted:
                # The right number of values, not flattened: the fix is a Flatten, not a size.
                raise Mismatch(
                    layer.node,
                    f"{layer.describe()} gets its {in_features} features unflattened, as shape "
                    f"{format_shape(shape)} per sample (shapes so far: {' -> '.join(self.trace)})",
                    hint=f"add nn.Flatten() before {layer.describe()} "
                    "(or torch.flatten(x, 1) in forward)",
                )
            elif shape[-1] != in_features:
                raise self.mismatch(layer, f"{in_features} input features", shape)
            self.accepted += 1
            return self.note(label, (*shape[:-1], out_features))
        if kind in ("Conv2d", "Conv1d"):
            return self._conv(layer, shape, label, dims=2 if kind == "Conv2d" else 1)
        if kind in ("MaxPool2d", "AvgPool2d"):
            return self._pool(layer, shape, label)
        if kind in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
            if len(shape) != 3:
                raise Unknown
            height, width = layer.pair_arg(0, "output_size")
            return self.note(label, (shape[0], height, width))
        if kind in ("BatchNorm1d", "BatchNorm2d"):
            features = layer.int_arg(0, "num_features")
            if not shape or shape[0] != features:
                raise self.mismatch(layer, f"{features} channels", shape)
            self.accepted += 1
            return shape
        raise Unknown

    def _conv(self, layer: LayerCall, shape: Shape, label: str, dims: int) -> Shape:
        in_channels = layer.int_arg(0, "in_channels")
        out_channels = layer.int_arg(1, "out_channels")
        if len(shape) != dims + 1 or shape[0] != in_channels:
            raise self.mismatch(layer, f"{in_channels} input channels", shape)
        self.accepted += 1
        padding_arg = layer.arg(4, "padding") or cst.Integer("0")
        kernel = layer.pair_arg(2, "kernel_size")
        stride = layer.pair_arg(3, "stride", 1)
        dilation = layer.pair_arg(5, "dilation", 1)
        if isinstance(padding_arg, cst.SimpleString):
            mode = padding_arg.evaluated_value
            if mode == "same":
                return self.note(label, (out_channels, *shape[1:]))
            if mode != "valid":
                raise Unknown
            padding = (0, 0)
        else:
            padding = _pair(padding_arg)
        sizes = [
            _conv_size(size, kernel[i], stride[i], padding[i], dilation[i])
            for i, size in enumerate(shape[1:])
        ]
        if min(sizes) < 1:
            raise self.mismatch(layer, "a larger input", shape)
        return self.note(label, (out_channels, *sizes))

    def _pool(self, layer: LayerCall, shape: Shape, label: str) -> Shape:
        if len(shape) != 3:
            raise Unknown
        kernel = layer.pair_arg(0, "kernel_size")
        stride_arg = layer.arg(1, "stride")
        is_none = stride_arg is None or (
            isinstance(stride_arg, cst.Name) and stride_arg.value == "None"
        )
        stride = kernel if is_none or stride_arg is None else _pair(stride_arg)
        padding = layer.pair_arg(2, "padding", 0)
        ceil = isinstance(layer.keywords.get("ceil_mode"), cst.Name) and (
            cst.ensure_type(layer.keywords["ceil_mode"], cst.Name).value == "True"
        )
        sizes = [
            _pool_size(size, kernel[i], stride[i], padding[i], ceil)
            for i, size in enumerate(shape[1:])
        ]
        if min(sizes) < 1:
            raise self.mismatch(layer, "a larger input", shape)
        return self.note(label, (shape[0], *sizes))


class ForwardInterpreter:
    """Reads a module's `forward` statement by statement, with the layers of its `__init__`."""

    FUNCTIONAL_POOLS = ("max_pool2d", "avg_pool2d")

    def __init__(self, tracer: ShapeTracer, layers: dict[str, cst.BaseExpression]) -> None:
        self.tracer = tracer
        self.layers = layers
        self.facts = tracer.facts
        self.env: dict[str, Shape] = {}

    def run(self, forward: cst.FunctionDef, shape: Shape) -> None:
        params = [p.name.value for p in forward.params.params]
        if len(params) < 2:
            raise Unknown
        self.env[params[1]] = shape
        for statement in forward.body.body:
            if not isinstance(statement, cst.SimpleStatementLine):
                raise Unknown
            for small in statement.body:
                self._statement(small)

    def _statement(self, node: cst.BaseSmallStatement) -> None:
        if isinstance(node, cst.Assign) and len(node.targets) == 1:
            target = node.targets[0].target
            if isinstance(target, cst.Name):
                self.env[target.value] = self.shape_of(node.value)
                return
        if isinstance(node, cst.Return) and node.value is not None:
            self.shape_of(node.value)
            return
        if isinstance(node, cst.Expr) and isinstance(node.value, cst.SimpleString):
            return  # a docstring
        raise Unknown

    def shape_of(self, node: cst.BaseExpression) -> Shape:
        if isinstance(node, cst.Name):
            if node.value not in self.env:
                raise Unknown
            return self.env[node.value]
        if not isinstance(node, cst.Call) or not node.args:
            raise Unknown
        func = node.func
        name = dotted_name(func) or ""
        if name.startswith("self.") and name.count(".") == 1:
            layer = self.layers.get(name[5:])
            if layer is None:
                raise Unknown
            return self.tracer.layer(layer, self.shape_of(node.args[0].value), name[5:])
        qualified = self.facts.qualified_name(func) or ""
        handler = self._function_handlers().get(last_part(qualified))
        if handler is not None and qualified.startswith("torch."):
            return handler(node)
        if isinstance(func, cst.Attribute):
            return self._method(node, func)
        raise Unknown

    def _function_handlers(self) -> dict[str, Callable[[cst.Call], Shape]]:
        handlers: dict[str, Callable[[cst.Call], Shape]] = {
            name: self._same_shape for name in SHAPE_PRESERVING
        }
        handlers["flatten"] = self._flatten
        for name in ("cat", "concat", "concatenate"):
            handlers[name] = self._cat
        for pool in self.FUNCTIONAL_POOLS:
            handlers[pool] = self._functional_pool
        return handlers

    def _same_shape(self, node: cst.Call) -> Shape:
        return self.shape_of(node.args[0].value)

    def _flatten(self, node: cst.Call) -> Shape:
        shape = self.shape_of(node.args[0].value)
        if shape == UNKNOWN_INPUT or len(node.args) < 2 or literal_int(node.args[1].value) != 1:
            raise Unknown
        return self.tracer.note("flatten", (math.prod(shape),))

    def _cat(self, node: cst.Call) -> Shape:
        """`torch.cat([a, b], dim=1)`: per sample, the sizes along dim - 1 add up."""
        parts = node.args[0].value
        dim_arg = next(
            (arg.value for arg in node.args[1:] if arg.keyword is None or arg.keyword.value in
             ("dim", "axis")),
            None,
        )  # fmt: skip
        if not isinstance(parts, cst.List | cst.Tuple) or dim_arg is None or not parts.elements:
            raise Unknown
        shapes = [self.shape_of(element.value) for element in parts.elements]
        if any(shape == UNKNOWN_INPUT or len(shape) != len(shapes[0]) for shape in shapes):
            raise Unknown
        dim = literal_int(dim_arg)
        axis = dim - 1 if dim > 0 else len(shapes[0]) + dim
        if not 0 <= axis < len(shapes[0]) or any(
            shape[:axis] + shape[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :]
            for shape in shapes
        ):
            raise Unknown
        joined = (*shapes[0][:axis], sum(shape[axis] for shape in shapes), *shapes[0][axis + 1 :])
        return self.tracer.note("cat", joined)

    def _functional_pool(self, node: cst.Call) -> Shape:
        shape = self.shape_of(node.args[0].value)
        if len(shape) != 3 or len(node.args) < 2:
            raise Unknown
        kernel = _pair(node.args[1].value)
        stride = _pair(node.args[2].value) if len(node.args) > 2 else kernel
        sizes = [
            _pool_size(size, kernel[i], stride[i], 0, False) for i, size in enumerate(shape[1:])
        ]
        return self.tracer.note("pool", (shape[0], *sizes))

    def _method(self, node: cst.Call, func: cst.Attribute) -> Shape:
        method = func.attr.value
        shape = self.shape_of(func.value)
        if method in SHAPE_PRESERVING or method in ("contiguous", "float"):
            return shape
        if shape == UNKNOWN_INPUT and method not in SHAPE_PRESERVING:
            raise Unknown
        if method == "flatten" and node.args and literal_int(node.args[0].value) == 1:
            return self.tracer.note("flatten", (math.prod(shape),))
        if method in ("view", "reshape") and len(node.args) == 2:
            return self._view(node, shape)
        raise Unknown

    def _view(self, node: cst.Call, shape: Shape) -> Shape:
        first, second = (arg.value for arg in node.args)
        per_sample = math.prod(shape)
        if _is_batch_size(first):
            if literal_int(second) not in (-1, per_sample):
                raise Unknown
            return self.tracer.note("view", (per_sample,))
        if literal_int(first) != -1:
            raise Unknown
        features = literal_int(second)
        if features != per_sample and self.tracer.accepted:
            raise Mismatch(
                node,
                f"{cst.Module([]).code_for_node(node)} asks for {features} values per sample, "
                f"but each sample has {per_sample} {format_shape(shape)}: the batch size changes "
                f"or the view fails (shapes so far: {' -> '.join(self.tracer.trace)})",
            )
        return self.tracer.note("view", (features,))


def _is_batch_size(node: cst.BaseExpression) -> bool:
    """`x.size(0)`, `x.shape[0]` or a name like `batch_size`."""
    code = cst.Module([]).code_for_node(node).replace(" ", "")
    return code.endswith((".size(0)", ".shape[0]")) or code in ("batch_size", "n", "b", "bs")


def module_layers(class_node: cst.ClassDef) -> dict[str, cst.BaseExpression]:
    """`self.name = <layer>` assignments of a module's `__init__`."""
    layers: dict[str, cst.BaseExpression] = {}
    for function in _methods(class_node, "__init__"):
        for statement in function.body.body:
            if not isinstance(statement, cst.SimpleStatementLine):
                continue
            for small in statement.body:
                if isinstance(small, cst.Assign) and len(small.targets) == 1:
                    name = dotted_name(small.targets[0].target) or ""
                    if name.startswith("self.") and name.count(".") == 1:
                        layers[name[5:]] = small.value
    return layers


def _methods(class_node: cst.ClassDef, name: str) -> Sequence[cst.FunctionDef]:
    return [
        statement
        for statement in class_node.body.body
        if isinstance(statement, cst.FunctionDef) and statement.name.value == name
    ]


def forward_of(class_node: cst.ClassDef) -> cst.FunctionDef | None:
    methods = _methods(class_node, "forward")
    return methods[0] if methods else None


def builder_result(facts: Facts, call: cst.Call) -> cst.BaseExpression | None:
    """What `block(16, 32)` builds, when the file defines `def block(cin, cout): return
    nn.Sequential(...)`: the returned expression with the arguments put in place of the
    parameters (defaults filled in). None for anything less plain."""
    name = dotted_name(call.func)
    function = facts.functions.get(name or "")
    if function is None or function.node is None or function.class_name is not None:
        return None
    body = [
        statement
        for statement in function.node.body.body
        if not (
            isinstance(statement, cst.SimpleStatementLine)
            and isinstance(statement.body[0], cst.Expr)
            and isinstance(statement.body[0].value, cst.SimpleString)
        )
    ]  # the docstring aside, one `return <expression>`
    if len(body) != 1 or not isinstance(body[0], cst.SimpleStatementLine):
        return None
    returned = body[0].body[0]
    if not isinstance(returned, cst.Return) or returned.value is None:
        return None
    bound = _bind_arguments(function.node.params, call)
    if bound is None:
        return None
    built = returned.value.visit(_Substitute(bound))
    return built if isinstance(built, cst.BaseExpression) else None


def _bind_arguments(params: cst.Parameters, call: cst.Call) -> dict[str, cst.BaseExpression] | None:
    if params.star_arg is not cst.MaybeSentinel.DEFAULT or params.star_kwarg is not None:
        return None
    names = [param.name.value for param in (*params.posonly_params, *params.params)]
    bound = {
        param.name.value: param.default
        for param in (*params.posonly_params, *params.params, *params.kwonly_params)
        if param.default is not None
    }
    positional = 0
    for arg in call.args:
        if arg.star:
            return None
        if arg.keyword is not None:
            bound[arg.keyword.value] = arg.value
        elif positional < len(names):
            bound[names[positional]] = arg.value
            positional += 1
        else:
            return None
    return bound


class _Substitute(cst.CSTTransformer):
    """Puts expressions in place of the names they are bound to (not keywords or attrs)."""

    def __init__(self, bound: dict[str, cst.BaseExpression]) -> None:
        super().__init__()
        self.bound = bound

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return False  # `nn.Conv2d`: only the object of an attribute is a name (below)

    def leave_Attribute(
        self, original_node: cst.Attribute, updated_node: cst.Attribute
    ) -> cst.BaseExpression:
        return updated_node.with_changes(value=original_node.value.visit(self))

    def visit_Arg(self, node: cst.Arg) -> bool:
        return False  # `padding=padding`: the keyword stays (the value is done below)

    def leave_Arg(self, original_node: cst.Arg, updated_node: cst.Arg) -> cst.Arg:
        value = original_node.value.visit(self)
        return (
            updated_node.with_changes(value=value)
            if value is not original_node.value
            else (updated_node)
        )

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        return self.bound.get(original_node.value, updated_node)
