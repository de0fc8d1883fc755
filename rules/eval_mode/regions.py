"""Where a file evaluates a model, and whether the file shows the model's Dropout/BatchNorm:
the knowledge the PG3xx rules share."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import libcst as cst

from pitfall_guard.static.code_model import Arm
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
    loop_source,
    strip_chain,
)
from pitfall_guard.static.names import dotted_name, entry_name, last_part
from pitfall_guard.static.torch_api import MODE_DEPENDENT_LAYERS, MODE_DEPENDENT_WITH
from pitfall_guard.static.values import holds_when, last_of_range

_EVAL_FUNCTION = re.compile(
    r"^_?(evaluate|evaluation|eval|validate|validation|val|valid|test|testing|predict|"
    r"inference|infer)(_\w+)?$|evaluat|validat",
    re.IGNORECASE,
)
_EVAL_LOADER = re.compile(r"val|test|eval|holdout", re.IGNORECASE)
# Held-out data under a name that says so, whatever made it: `valid_data`, `test_iter`.
_EVAL_DATA = re.compile(
    r"^(val|valid|validation|test|testing|eval|dev|holdout)_?(data|dataset|set|iter|iterator|"
    r"batches|dl|loader)s?$",
    re.IGNORECASE,
)
# An input that is held-out data: `test_x`, `val_images`, `test_inputs`.
_EVAL_INPUT = re.compile(
    r"^(val|valid|validation|test|testing)_?(x|data|input|inputs|images|imgs|batch|samples)$",
    re.IGNORECASE,
)
_LOADERS_NAME = re.compile(r"loader", re.IGNORECASE)


@dataclass(frozen=True)
class EvalRegion:
    """Code that evaluates a model: an evaluation function, or a loop over a test loader."""

    description: str
    forward: CallSite
    model: str
    function: Function | None
    loop: Loop | None
    # The first forward of each model the region runs (an encoder, then a decoder), in order.
    forwards: tuple[tuple[str, CallSite], ...] = ()
    # A prediction right after training, not an evaluation function or loop: there a GAN's
    # samples may be drawn in training mode on purpose, so only PG302 reads it.
    after_training: bool = False


def _trains(events: Sequence[GradEvent]) -> bool:
    return any(
        event.kind in (EventKind.STEP, EventKind.BACKWARD, EventKind.CLOSURE_STEP)
        for event in events
    )


def _model_call(facts: Facts, site: CallSite) -> str | None:
    func = site.node.func
    if isinstance(func, cst.Attribute) and func.attr.value == "forward":
        func = func.value  # `model.forward(x)` runs the model too (PG604 says the rest)
    name = entry_name(func)
    if name == "self" and _in_module_method(facts, site.function):
        return name  # `self(x)` in a Keras-style `evaluate()` of the module itself
    if name is None or name in facts.classes:
        return None  # `Net()` builds a model, it runs none
    if facts.kind_of(func) is Kind.MODEL or _loaded_model(facts, name, site.function):
        return name
    return None


_LOADERS_OF_MODELS = ("torch.load", "torch.jit.load")


def _loaded_model(facts: Facts, name: str, function: Function) -> bool:
    """`rnn = torch.load("model.pt")` and then `rnn(x)`: a whole pickled module."""
    values = facts.assignments_in(name, function)
    return bool(values) and all(
        isinstance(value, cst.Call) and facts.qualified_name(value.func) in _LOADERS_OF_MODELS
        for value in (strip_chain(value)[0] for value in values)
    )


def _iterates_data(facts: Facts, function: Function, forwards: Sequence[CallSite]) -> bool:
    """A forward inside a loop, or a function handed a loader (`evaluate(self, loader)`)."""
    return any(site.loops for site in forwards) or any(
        facts.kind_of_name(name) is Kind.LOADER for name in function.parameter_names()
    )


def _in_module_method(facts: Facts, function: Function) -> bool:
    return (
        function.class_name is not None
        and function.name != "forward"
        and facts.is_module_class(function.class_name)
    )


def evaluation_regions(facts: Facts) -> Iterator[EvalRegion]:
    """Every evaluation function and loop of the file with its first forward pass."""
    eval_functions: set[Function] = set()
    eval_loops: set[Loop] = set()
    for function in facts.all_functions:
        if (
            function.node is None
            or (function.name.startswith("test_") and _is_test_code(facts))
            # Lightning switches modes and disables grad around its *_step hooks itself.
            or (function.class_name is not None and facts.is_lightning_class(function.class_name))
            or not _EVAL_FUNCTION.search(function.name)
            or _trains(facts.expand(function.events))
        ):
            continue
        sites = [s for s in facts.calls if s.function is function]
        forwards = _first_forwards(facts, sites)
        # A class's own `predict(input)` is its API (the caller picks the grad mode); an
        # evaluation method (`evaluate(loader)`, `validate(self)`, generation) loops.
        if (
            forwards
            and function.class_name is not None
            and not _iterates_data(facts, function, [s for s in sites if _model_call(facts, s)])
        ):
            continue
        if forwards and not _is_shape_probe(facts, forwards[0][1]):
            eval_functions.add(function)
            model, site = forwards[0]
            yield EvalRegion(f"{function.name}()", site, model, function, None, forwards)
    for loop in facts.loops:
        iterable = loop_source(loop)
        name = _evaluation_loader(facts, iterable)
        if name is None or loop.function in eval_functions or _trains(facts.expand(loop.events)):
            continue
        forwards = _first_forwards(facts, [s for s in facts.calls if loop in s.loops])
        if forwards:
            eval_loops.add(loop)
            model, site = forwards[0]
            yield EvalRegion(f"the loop over '{name}'", site, model, loop.function, loop, forwards)
    yield from _predictions_after_training(facts, eval_functions, eval_loops)
    yield from _test_forwards_in_training(facts)
    yield from _inference_after_eval(facts, eval_functions, eval_loops)


def _predictions_after_training(
    facts: Facts, eval_functions: set[Function], eval_loops: set[Loop]
) -> Iterator[EvalRegion]:
    """`predict = model(test_x)` in the scope of a training loop, after it, with nothing
    trained after: the prediction a script makes once training is done."""
    trained = facts.trained_models()
    order = {site.node: index for index, site in enumerate(facts.calls)}
    for loop in facts.loops:
        if loop.parent is not None or not _trains(loop.events):
            continue
        scope = loop.function
        inside = [order[s.node] for s in facts.calls if loop in s.loops]
        if scope is None or scope in eval_functions or not inside:
            continue
        last_step = max(
            (order[e.node] for e in scope.events if e.node in order
             and e.kind in (EventKind.BACKWARD, EventKind.STEP, EventKind.CLOSURE_STEP)),
            default=-1,
        )  # fmt: skip
        end = max(inside)
        for site in facts.calls[end + 1 :]:
            model = _model_call(facts, site) if site.function is scope else None
            if model is None or model not in trained or order[site.node] < last_step:
                continue
            if any(_trains(other.events) or other in eval_loops for other in site.loops):
                continue  # part of training, or an evaluation loop already
            if not _is_shape_probe(facts, site):
                line = "after the training loop"
                yield EvalRegion(
                    f"the prediction {line}", site, model, scope, None, ((model, site),),
                    after_training=True,
                )  # fmt: skip
            break


def _imported_packages(facts: Facts) -> set[str]:
    return {origin.split(".")[0] for origin in facts.imports.origins().values()}


def _is_test_code(facts: Facts) -> bool:
    """A test module, or a file that uses a test framework: its `test_*` functions are tests
    (in a script, `test_net(net, dataset)` evaluates)."""
    return facts.test_module or bool(_imported_packages(facts) & {"pytest", "unittest"})


_ASKS_FOR_GRADIENTS = ("requires_grad", "autograd", ".grad", ".attribute(")


def _inference_after_eval(
    facts: Facts, eval_functions: set[Function], eval_loops: set[Loop]
) -> Iterator[EvalRegion]:
    """An inference script: `model.eval()`, then forwards, in a file that never trains nor
    asks for any gradient (no backward, no `requires_grad`: not a saliency map)."""
    if any(_trains(function.events) for function in facts.all_functions) or any(
        word in facts.source for word in _ASKS_FOR_GRADIENTS
    ):
        return
    if _is_test_code(facts) or "captum" in _imported_packages(facts):
        return  # tests exercise modes; attribution methods differentiate the forward
    order = {site.node: index for index, site in enumerate(facts.calls)}
    switched: dict[str, int] = {}
    for function in facts.all_functions:
        for event in function.events:
            if event.kind is EventKind.EVAL_MODE and event.target and event.node in order:
                switched.setdefault(event.target, order[event.node])
    for site in facts.calls:
        model = _model_call(facts, site)
        if (
            model is None
            or model not in switched
            or order[site.node] < switched[model]
            or site.function in eval_functions
            or any(loop in eval_loops for loop in site.loops)
            or _is_shape_probe(facts, site)
        ):
            continue
        yield EvalRegion(
            f"the inference after {model}.eval()", site, model, site.function, None,
            ((model, site),), after_training=True,
        )  # fmt: skip
        return


def _test_forwards_in_training(facts: Facts) -> Iterator[EvalRegion]:
    """`if step % 50 == 0: test_output = cnn(test_x)` inside the training loop: a forward of
    the trained model on held-out data, in an `if` that trains nothing."""
    trained = facts.trained_models()
    for site in facts.calls:
        model = _model_call(facts, site)
        if model is None or model not in trained or not site.arms or not site.node.args:
            continue
        name = dotted_name(site.node.args[0].value)
        loop = next((loop for loop in reversed(site.loops) if _trains(loop.events)), None)
        if name is None or loop is None or not _EVAL_INPUT.match(last_part(name)):
            continue
        arm = site.arms[-1]
        if any(
            event.kind in (EventKind.BACKWARD, EventKind.STEP, EventKind.CLOSURE_STEP)
            and (trains := facts.site_of(event.node)) is not None
            and arm in trains.arms
            for event in loop.events
        ):
            continue
        yield EvalRegion(
            f"the forward on '{name}' inside the training loop", site, model, site.function,
            None, ((model, site),), after_training=True,
        )  # fmt: skip


def _evaluation_loader(facts: Facts, iterable: cst.BaseExpression | None) -> str | None:
    """The name of a validation/test loader a loop iterates: `val_loader`, `test_iter`, or
    an entry of a dict of loaders such as `dataloader["val"]`."""
    if isinstance(iterable, cst.Subscript) and len(iterable.slice) == 1:
        index = iterable.slice[0].slice
        key = index.value if isinstance(index, cst.Index) else None
        owner = dotted_name(iterable.value)
        if (
            isinstance(key, cst.SimpleString)
            and isinstance(key.evaluated_value, str)
            and _EVAL_LOADER.search(key.evaluated_value)
            and owner is not None
            and _LOADERS_NAME.search(last_part(owner))
        ):
            return f"{owner}[{key.value}]"
        return None
    name = dotted_name(iterable) if iterable is not None else None
    if iterable is None or name is None or not _EVAL_LOADER.search(last_part(name)):
        return None
    if _EVAL_DATA.match(last_part(name)):
        return name
    return name if facts.kind_of(iterable) is Kind.LOADER else None


def _first_forwards(facts: Facts, sites: Sequence[CallSite]) -> tuple[tuple[str, CallSite], ...]:
    first: dict[str, CallSite] = {}
    for site in sites:
        model = _model_call(facts, site)
        if model is not None:
            first.setdefault(model, site)
    return tuple(first.items())


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
    return all(_made_up_argument(facts, site, arg.value) for arg in site.node.args)


def _made_up_argument(facts: Facts, site: CallSite, value: cst.BaseExpression) -> bool:
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


@dataclass(frozen=True)
class EvalSwitch:
    """Whether an evaluation region is preceded by `model.eval()`: `found`, or, when every
    eval() the file calls for it sits in an arm of an `if` that the evaluation is outside
    of, that `if` (`if verbose: model.eval()`)."""

    found: bool
    only_if: cst.If | None = None


def eval_switch(facts: Facts, region: EvalRegion) -> EvalSwitch:
    """Where `model.eval()` is called for `region`: in its function or loop's scope, in a
    caller of its function, at the top level of the script, or in a helper those call."""
    if region.loop is not None:
        anchors = [(region.loop.function, region.forward)] if region.loop.function else []
    else:
        anchors = [(region.function, region.forward)] if region.function else []
        if region.function is not None and region.function.node is not None:
            anchors += [(site.function, site) for site in facts.callers_of(region.function.name)]
    scopes = {scope for scope, _ in anchors}
    # A script that switches to eval() at its top level before evaluating counts too.
    if facts.module_scope not in scopes:
        anchors.append((facts.module_scope, None))
    conditional: list[tuple[Arm, ...]] = []
    for scope, anchor in anchors:
        for site in _eval_calls(facts, scope):
            if anchor is None:
                return EvalSwitch(True)  # at the top level of the script
            extra = tuple(arm for arm in site.arms if arm not in anchor.arms)
            earlier = [loop for loop in site.loops if loop not in anchor.loops]
            if not extra or (earlier and not _skips_last_pass(facts, earlier[0], extra)):
                # A periodic validation in an earlier loop leaves the model in eval mode,
                # unless its condition is false on the loop's last pass.
                return EvalSwitch(True)
            conditional.append(extra)
    # `from utils import set_eval_mode`: a helper of another file that calls .eval().
    if facts.project is not None and any(
        (summary := facts.project.function(*origin)) is not None and "eval" in summary.methods
        for site in facts.calls
        if site.function in scopes
        for origin in facts.imports.project_origins(site.node.func)
    ):
        return EvalSwitch(True)
    if not conditional:
        return EvalSwitch(False)
    # `if a: model.eval() else: model.eval()` switches on both paths.
    outer = {arms[0] for arms in conditional}
    if any((branch, 1 - index) in outer for branch, index in outer):
        return EvalSwitch(True)
    return EvalSwitch(False, conditional[0][0][0])


def _skips_last_pass(facts: Facts, loop: Loop, arms: tuple[Arm, ...]) -> bool:
    """`for epoch in range(max_epoch): ... if (epoch + 1) % val_interval == 0: model.eval()`
    where, with the defaults, the last epoch does not validate."""
    if len(arms) != 1 or arms[0][1] != 0 or not isinstance(loop.node, cst.For):
        return False
    variable = loop.node.target
    last = last_of_range(loop.node.iter, facts)
    if not isinstance(variable, cst.Name) or last is None:
        return False
    return holds_when(arms[0][0].test, facts, variable.value, last) is False


def _eval_calls(facts: Facts, scope: Function, depth: int = 3) -> Iterator[CallSite]:
    """The calls in `scope` that switch to eval mode: `.eval()`/`.train(False)`, or a call
    to a function of the file that does (a few calls deep)."""
    for event in scope.events:
        site = facts.site_of(event.node)
        if site is None:
            continue
        if event.kind is EventKind.EVAL_MODE:
            yield site
        elif event.kind is EventKind.CALL and depth > 0:
            function = facts.functions.get(event.target or "")
            if function is not None and next(_eval_calls(facts, function, depth - 1), None):
                yield site


def has_mode_dependent_layers(facts: Facts, model: str, function: Function | None) -> bool:
    """Whether the file shows that `model`, as used in `function`, has Dropout/BatchNorm.

    The model is followed to its constructor: a binding of the file, or what the file's
    callers pass for a parameter. A model whose layers the file does not show is not
    reported: eval() may change nothing for it.
    """
    if model == "self":
        return function is not None and _class_shows_mode_layers(facts, function.class_name)
    return _shows_mode_layers(facts, model, function, depth=3)


def _class_shows_mode_layers(facts: Facts, class_name: str | None, depth: int = 3) -> bool:
    """A module class of the file with Dropout/BatchNorm in it or in its bases."""
    info = facts.classes.get(class_name or "")
    if info is None or depth == 0:
        return False
    return _mentions_mode_layers(facts, info.node) or any(
        _class_shows_mode_layers(facts, base, depth - 1) for base in info.bases
    )


def _shows_mode_layers(facts: Facts, model: str, function: Function | None, depth: int) -> bool:
    if depth == 0:
        return False
    if "." in model:
        # `self.model = model.to(device)` in a Trainer's __init__: what its callers hand in.
        for scope in facts.all_functions:
            for value in scope.assignments.get(model, []) if scope.node is not None else ():
                name = dotted_name(strip_chain(value)[0])
                if (
                    name is not None
                    and name in scope.parameter_names()
                    and _shows_mode_layers(facts, name, scope, depth - 1)
                ):
                    return True
    callers = _callers(facts, function) if function is not None else []
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
    # Every model the name is bound to (`decoder = AttnDecoder(...)` in one branch,
    # `decoder = Decoder(...)` in the other): one with Dropout/BatchNorm is enough.
    calls = [strip_chain(value)[0] for value in _bound_values(facts, model, function)]
    return any(
        isinstance(call, cst.Call) and _constructor_shows_mode_layers(facts, call) for call in calls
    )


def _callers(facts: Facts, function: Function) -> list[CallSite]:
    """The file's calls of `function`; for a class's `__init__`, its instantiations."""
    if function.name == "__init__" and function.class_name is not None:
        return [
            site
            for site in facts.calls
            if facts.qualified_name(site.node.func) == function.class_name
        ]
    return facts.callers_of(function.name)


def _bound_values(facts: Facts, name: str, function: Function | None) -> list[cst.BaseExpression]:
    """What `name` is bound to where `function` reads it: its own assignments, else those of
    the functions around it, else the module's. `self.net` is looked up file-wide."""
    if "." in name or function is None:
        constructor = facts.constructors.get(name)
        found = [constructor] if constructor is not None else []
        return [*found, *facts.assignments.get(name, [])]
    for scope in (function, *_enclosing(function), facts.module_scope):
        if name in scope.assignments:
            return scope.assignments[name]
    return []


def _enclosing(function: Function) -> list[Function]:
    """The functions whose bodies define `function`, innermost first."""
    around = []
    scope = function.parent
    while scope is not None and scope.node is not None:
        around.append(scope)
        scope = scope.parent
    return around


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
    # `from models import Net`: a module class of another file of the project.
    project = facts.project
    return project is not None and any(
        project.shows_mode_layers(*origin)
        for origin in facts.imports.project_origins(constructor.func)
    )


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
