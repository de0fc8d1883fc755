"""What a number in the code is worth without running it: literals, arithmetic on them,
constants of the file, argparse defaults (`lr=args.lr` with `add_argument("--lr",
default=10)`), literal config dicts (`CONFIG = {"lr": 10.0}`; `CONFIG["lr"]`) and the
defaults of a config class or namespace (`cfg = Config()` with `lr: float = 10.0`)."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from pitfall_guard.static.facts import Facts, calls_within
from pitfall_guard.static.names import dotted_name
from pitfall_guard.static.tensors import method_name, string_value

_PARSE_METHODS = ("parse_args", "parse_known_args")


@dataclass(frozen=True)
class Number:
    """A value and, when it is not written where it is used, where it comes from."""

    value: float
    origin: str | None = None


def number_of(node: cst.BaseExpression, facts: Facts, depth: int = 3) -> Number | None:
    """The value `node` has when the script runs with its defaults; None when unknown."""
    if isinstance(node, cst.Integer | cst.Float):
        return Number(float(node.evaluated_value))
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        inner = number_of(node.expression, facts, depth)
        return None if inner is None else Number(-inner.value, inner.origin)
    if isinstance(node, cst.BinaryOperation):
        return _arithmetic(node, facts, depth)
    if depth == 0:
        return None
    if isinstance(node, cst.Name):
        values = facts.assignments.get(node.value, [])
        if len(values) == 1:
            found = number_of(values[0], facts, depth - 1)
            return None if found is None else Number(found.value, found.origin or node.value)
        return None
    if isinstance(node, cst.Attribute):
        return _argparse_default(node, facts, depth) or _class_default(node, facts, depth)
    if isinstance(node, cst.Subscript):
        return _config_entry(node, facts, depth)
    return None


def holds_when(test: cst.BaseExpression, facts: Facts, name: str, value: float) -> bool | None:
    """Whether `test` (`(epoch + 1) % val_interval == 0`) is true when `name` is `value`
    and the rest has its default values; None when that cannot be read."""
    if not isinstance(test, cst.Comparison) or len(test.comparisons) != 1:
        return None
    target = test.comparisons[0]
    left = _value_with(test.left, facts, name, value)
    right = _value_with(target.comparator, facts, name, value)
    if left is None or right is None:
        return None
    if isinstance(target.operator, cst.Equal):
        return left == right
    if isinstance(target.operator, cst.NotEqual):
        return left != right
    return None


def _value_with(node: cst.BaseExpression, facts: Facts, name: str, value: float) -> float | None:
    if isinstance(node, cst.Name) and node.value == name:
        return value
    if isinstance(node, cst.BinaryOperation):
        left = _value_with(node.left, facts, name, value)
        right = _value_with(node.right, facts, name, value)
        if left is None or right is None:
            return None
        if isinstance(node.operator, cst.Add):
            return left + right
        if isinstance(node.operator, cst.Subtract):
            return left - right
        if isinstance(node.operator, cst.Modulo) and right:
            return left % right
        return None
    found = number_of(node, facts)
    return None if found is None else found.value


def last_of_range(iterable: cst.BaseExpression | None, facts: Facts) -> float | None:
    """The last value of `range(n)` / `range(start, n)` with known bounds."""
    if not (
        isinstance(iterable, cst.Call)
        and dotted_name(iterable.func) == "range"
        and 1 <= len(iterable.args) <= 2
    ):
        return None
    stop = number_of(iterable.args[-1].value, facts)
    return None if stop is None else stop.value - 1


def _arithmetic(node: cst.BinaryOperation, facts: Facts, depth: int) -> Number | None:
    left, right = number_of(node.left, facts, depth), number_of(node.right, facts, depth)
    if left is None or right is None:
        return None
    origin = left.origin or right.origin
    if isinstance(node.operator, cst.Multiply):
        return Number(left.value * right.value, origin)
    if isinstance(node.operator, cst.Divide) and right.value:
        return Number(left.value / right.value, origin)
    if isinstance(node.operator, cst.Power) and abs(right.value) < 100:
        return Number(float(left.value**right.value), origin)
    return None


def _argparse_default(node: cst.Attribute, facts: Facts, depth: int) -> Number | None:
    """`args.lr` where `args = parser.parse_args()` and `--lr` has a numeric default."""
    default = argparse_default(node, facts)
    if default is None:
        return None
    found = number_of(default, facts, depth - 1)
    return None if found is None else Number(found.value, f"the default of {option_flag(node)}")


def option_flag(node: cst.Attribute) -> str:
    """`--learning-rate` for `args.learning_rate`."""
    return "--" + node.attr.value.replace("_", "-")


def argparse_default(node: cst.Attribute, facts: Facts) -> cst.BaseExpression | None:
    """The default of the option `args.NAME` reads, where `args = parser.parse_args()`."""
    owner = dotted_name(node.value)
    if owner is None or "." in owner:
        return None
    if f"{owner}.{node.attr.value}" in facts.assignments:
        return None  # `args.lr = ...`: set again after parsing
    made_by = facts.assignments.get(owner, [])
    parsed = bool(made_by) and all(_is_parse_call(value, facts) for value in made_by)
    # A function's `args` parameter: the file's only parser is the one that made it.
    handed_in = any(owner in function.parameter_names() for function in facts.all_functions)
    if not parsed and (made_by or not handed_in):
        return None
    defaults = [
        default
        for site in facts.calls
        if method_name(site.node) == "add_argument"
        and _destination(site.node) == node.attr.value
        and (default := _keyword(site.node, "default")) is not None
    ]
    return defaults[0] if len(defaults) == 1 else None


_NAMESPACES = ("types.SimpleNamespace", "argparse.Namespace")


def _class_default(node: cst.Attribute, facts: Facts, depth: int) -> Number | None:
    """`cfg.lr` where `cfg = Config()` and the file's `Config` (a dataclass, a plain class)
    sets `lr: float = 10.0` in its body; `Config.lr`; `cfg = SimpleNamespace(lr=10.0)`. A
    value passed to the constructor (`Config(lr=1e-3)`) wins."""
    owner, attribute = dotted_name(node.value), node.attr.value
    if owner is None or "." in owner or f"{owner}.{attribute}" in facts.assignments:
        return None
    class_name = owner if owner in facts.classes else None
    if class_name is None:
        made_by = facts.assignments.get(owner, [])
        if len(made_by) != 1 or not isinstance(made_by[0], cst.Call):
            return None
        class_name = facts.qualified_name(made_by[0].func)
        if class_name not in facts.classes and class_name not in _NAMESPACES:
            return None
        passed = _keyword(made_by[0], attribute)
        if passed is not None:
            found = number_of(passed, facts, depth - 1)
            return None if found is None else Number(found.value, f"{owner}.{attribute}")
        if class_name not in facts.classes:
            return None
    for statement in facts.classes[class_name].node.body.body:
        for small in statement.body if isinstance(statement, cst.SimpleStatementLine) else ():
            target, value = _class_assignment(small)
            if target == attribute and value is not None:
                found = number_of(value, facts, depth - 1)
                origin = f"the default of {class_name}.{attribute}"
                return None if found is None else Number(found.value, origin)
    return None


def _class_assignment(
    node: cst.BaseSmallStatement,
) -> tuple[str | None, cst.BaseExpression | None]:
    """`lr: float = 1e-3` or `lr = 1e-3` in a class body: ("lr", the value)."""
    if isinstance(node, cst.AnnAssign) and isinstance(node.target, cst.Name):
        return node.target.value, node.value
    if isinstance(node, cst.Assign) and len(node.targets) == 1:
        target = node.targets[0].target
        return (target.value, node.value) if isinstance(target, cst.Name) else (None, None)
    return None, None


def _config_entry(node: cst.Subscript, facts: Facts, depth: int) -> Number | None:
    """`CONFIG["lr"]` where `CONFIG` is assigned one literal dict in the file."""
    table = _dict_of(node.value, facts, depth)
    if table is None or len(node.slice) != 1:
        return None
    index = node.slice[0].slice
    key = string_value(index.value) if isinstance(index, cst.Index) else None
    if key is None:
        return None
    for element in table.elements:
        if isinstance(element, cst.DictElement) and string_value(element.key) == key:
            found = number_of(element.value, facts, depth - 1)
            where = dotted_name(node.value) or "the config"
            return None if found is None else Number(found.value, f'{where}["{key}"]')
    return None


def _dict_of(node: cst.BaseExpression, facts: Facts, depth: int) -> cst.Dict | None:
    if isinstance(node, cst.Dict):
        return node
    if isinstance(node, cst.Subscript) and depth > 0:
        outer = _dict_of(node.value, facts, depth - 1)
        index = node.slice[0].slice if len(node.slice) == 1 else None
        key = string_value(index.value) if isinstance(index, cst.Index) else None
        for element in outer.elements if outer is not None and key is not None else ():
            if isinstance(element, cst.DictElement) and string_value(element.key) == key:
                return _dict_of(element.value, facts, depth - 1)
        return None
    if isinstance(node, cst.Name):
        values = facts.assignments.get(node.value, [])
        return values[0] if len(values) == 1 and isinstance(values[0], cst.Dict) else None
    return None


def _is_parse_call(value: cst.BaseExpression, facts: Facts) -> bool:
    """`parser.parse_args()`, or a call of the file's own function that parses
    (`args = parse_args()` with `def parse_args(): ...; return parser.parse_args()`)."""
    if isinstance(value, cst.Subscript):  # `parser.parse_known_args()[0]`
        value = value.value
    if not isinstance(value, cst.Call):
        return False
    if method_name(value) in _PARSE_METHODS:
        return True
    function = facts.functions.get(dotted_name(value.func) or "")
    return (
        function is not None
        and function.node is not None
        and any(method_name(call) in _PARSE_METHODS for call in calls_within(function.node))
    )


def _destination(call: cst.Call) -> str | None:
    """The attribute `add_argument(...)` stores to: `dest=`, else the first long option."""
    dest = _keyword(call, "dest")
    if dest is not None:
        return string_value(dest)
    options = [string_value(arg.value) for arg in call.args if arg.keyword is None]
    names = [option for option in options if option is not None]
    long = [name for name in names if name.startswith("--")]
    chosen = long[0] if long else names[0] if names else None
    return None if chosen is None else chosen.lstrip("-").replace("-", "_")


def _keyword(call: cst.Call, name: str) -> cst.BaseExpression | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg.value
    return None
