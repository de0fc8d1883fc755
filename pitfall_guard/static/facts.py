"""What the names in a script are, learned once per file and shared by every rule.

The facts pass (`collect.py`) reads the imports, classifies the objects the script builds
(models, optimizers, schedulers, scalers, loss functions, loaders, samplers, datasets,
devices), remembers which models and tensors are moved to a device, and records in source
order, for every loop and every function, the training events: backward passes, optimizer
and scheduler steps, gradient clearing, train/eval mode switches and calls to the file's own
functions. Every call is also kept as a `CallSite` with its context (enclosing loops and
function, whether gradients are disabled there). `Facts` answers the rules' questions from
these records, without walking the tree again.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import libcst as cst

from pitfall_guard.static.code_model import (
    MOVE_METHODS,
    Accumulation,
    CallSite,
    ClassInfo,
    EventKind,
    Function,
    GradEvent,
    Loop,
    called_function_name,
    calls_within,
    is_false,
    is_grad,
    loop_source,
    method_name,
    strip_chain,
)
from pitfall_guard.static.collect import FactsCollector
from pitfall_guard.static.names import (
    ImportTable,
    dotted_name,
    entry_name,
    is_test_path,
    key_name,
    last_part,
)
from pitfall_guard.static.project import ProjectView
from pitfall_guard.static.torch_api import (
    DTYPES,
    Kind,
    is_creation_function,
    kind_from_name,
    kind_of_constructor,
)
from pitfall_guard.static.walk import visitor_methods, walk

__all__ = [
    "Accumulation",
    "CallSite",
    "EventKind",
    "Facts",
    "Function",
    "GradEvent",
    "Kind",
    "Loop",
    "argument_for",
    "calls_within",
    "creation_without_device",
    "loop_source",
    "strip_chain",
]


class Facts:
    """The shared knowledge about one module. Build it with `Facts.build(module)`."""

    def __init__(self) -> None:
        self.imports = ImportTable()
        # Names bound to a recognised constructor call, and that call (always both).
        self.bindings: dict[str, Kind] = {}
        self.constructors: dict[str, cst.Call] = {}
        # Parameters whose annotation names a known type (`optimizer: torch.optim.SGD`).
        self.annotated: dict[str, Kind] = {}
        # Every assignment and every move of a name anywhere in the file; the scoped views
        # are Function.assignments/moves, read through assignments_in() and moves_of().
        self.assignments: dict[str, list[cst.BaseExpression]] = {}
        self.moves: dict[str, list[cst.Call]] = {}
        self.assigned_to: dict[cst.BaseExpression, str] = {}
        # `real, aux = discriminator(x)`: (the call, "aux") -> 1, the element `aux` receives.
        self.unpacked: dict[tuple[cst.BaseExpression, str], int] = {}
        self.classes: dict[str, ClassInfo] = {}
        self.loops: list[Loop] = []
        self.module_scope = Function(None)
        self.functions: dict[str, Function] = {}
        self.all_functions: list[Function] = [self.module_scope]
        self.calls: list[CallSite] = []
        self.accumulations: list[Accumulation] = []
        # `a + b` between two names (the device rules compare where a and b live).
        self.name_operations: list[cst.BinaryOperation] = []
        # The file's text, and the text after each `#` (the walk skips whitespace, where
        # libcst keeps comments).
        self.source = ""
        self.comments: list[str] = []
        # Values assigned where gradients are off (under no_grad, in a no_grad function).
        self.no_grad_values: set[cst.BaseExpression] = set()
        # The other files of the project, where the engine knows the file's path; whether
        # the file is a test module (pytest's `test_*` functions are tests there).
        self.project: ProjectView | None = None
        self.test_module = False
        self._clearing_functions: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        module: cst.Module,
        source: str | None = None,
        project: ProjectView | None = None,
        path: str = "",
    ) -> Facts:
        facts = cls()
        facts.project = project
        facts.test_module = is_test_path(path) if path else False
        text = module.code if source is None else source
        facts.source = text
        facts.comments = [line[line.index("#") :] for line in text.splitlines() if "#" in line]
        visitor = FactsCollector(facts)
        walk(module, {name: [method] for name, method in visitor_methods(visitor).items()})
        facts._classify_events()
        return facts

    # -- names -------------------------------------------------------------------------

    def qualified_name(self, node: cst.BaseExpression) -> str | None:
        return self.imports.qualified_name(node)

    def kind_of(self, node: cst.BaseExpression) -> Kind | None:
        """The kind of the object `node` names: from its constructor, else from its name."""
        node, _ = strip_chain(node)
        if isinstance(node, cst.Call):
            return self.kind_of_call(node)
        name = entry_name(node)
        return None if name is None else self.kind_of_name(name)

    def kind_of_name(self, name: str) -> Kind | None:
        known = self.bindings.get(name) or self.annotated.get(name)
        return known if known is not None else kind_from_name(name)

    def kind_of_call(self, call: cst.Call) -> Kind | None:
        qualified = self.qualified_name(call.func)
        if qualified is None:
            return None
        if self.is_module_class(qualified):
            return Kind.MODEL
        known = kind_of_constructor(qualified)
        if known is None and self.project is not None:
            # `from models import Net`: an nn.Module class of another file of the project.
            project = self.project
            origins = self.imports.project_origins(call.func)
            if any(project.module_class(*origin) is not None for origin in origins):
                return Kind.MODEL
        return known

    def is_module_class(self, name: str, seen: frozenset[str] = frozenset()) -> bool:
        """Whether `name` is an nn.Module subclass defined in this file."""
        info = self.classes.get(name)
        if info is None or name in seen:
            return False
        return any(
            base.startswith("torch.nn.")
            or base.endswith("LightningModule")
            or self.is_module_class(base, seen | {name})
            for base in info.bases
        )

    def is_lightning_class(self, name: str) -> bool:
        info = self.classes.get(name)
        return info is not None and any(base.endswith("LightningModule") for base in info.bases)

    @functools.cached_property
    def extension_receivers(self) -> set[str]:
        """Names whose `.forward()`/`.backward()` are plain functions, not module calls: an
        imported module (a compiled C++/CUDA extension, `turtle`), what
        `torch.utils.cpp_extension.load` returned, or a `RemoteModule` (whose API is
        `.forward`)."""
        imported = self.imports.origins()
        remote = any(origin.endswith("RemoteModule") for origin in imported.values())
        found: set[str] = set()
        for site in self.calls:
            func = site.node.func
            if not isinstance(func, cst.Attribute) or func.attr.value not in _PLAIN_FUNCTIONS:
                continue
            name = dotted_name(func.value)
            if name is None:
                continue
            if name in imported and not imported[name].startswith("torch"):
                found.add(name)
                continue
            if remote and "remote" in name.lower():
                found.add(name)  # a RemoteModule handed in
                continue
            for value in self.assignments.get(name, []):
                made_by = self.qualified_name(value.func) if isinstance(value, cst.Call) else None
                if made_by and (
                    made_by.startswith("torch.utils.cpp_extension") or "RemoteModule" in made_by
                ):
                    found.add(name)
        return found

    # -- devices -----------------------------------------------------------------------

    @property
    def moved(self) -> set[str]:
        """Names moved to some device somewhere in the file."""
        return {name for name, calls in self.moves.items() if any(map(self.is_device_move, calls))}

    def assignments_in(self, name: str, function: Function | None) -> list[cst.BaseExpression]:
        """What `name` is assigned in `function`; for names it never assigns, the module's."""
        if "." in name:
            return self.assignments.get(name, [])
        if function is not None and name in function.assignments:
            return function.assignments[name]
        return self.module_scope.assignments.get(name, [])

    def moves_of(self, name: str, function: Function | None = None) -> list[cst.Call]:
        """The device moves of `name` that `function` sees: its own and the module's."""
        if "." in name or function is None:
            return self.moves.get(name, [])
        own = function.moves.get(name, [])
        module = self.module_scope.moves.get(name, []) if function is not self.module_scope else []
        return [call for call in (*own, *module) if self.is_device_move(call)]

    def is_moved(self, name: str, function: Function | None = None, depth: int = 3) -> bool:
        """Whether `name`, as seen in `function`, was moved to a device.

        Followed through assignments (`train_model = DDP(model)`) and, for a parameter,
        through the arguments the file's callers pass (a few calls deep).
        """
        if self.moves_of(name, function):
            return True
        if depth == 0 or function is None or "." in name:
            return False
        for value in function.assignments.get(name, []):
            if any(self.is_moved(source, function, depth - 1) for source in self._sources(value)):
                return True
        if name in function.assignments or name not in function.parameter_names():
            return False
        for site in self.callers_of(function.name):
            argument = argument_for(site.node, function, name)
            if argument is not None and any(
                self.is_moved(source, site.function, depth - 1)
                for source in self._sources(argument)
            ):
                return True
        return False

    def _sources(self, node: cst.BaseExpression) -> list[str]:
        """The names an expression passes on: `DDP(model)` → model, `a if c else b` → a, b."""
        node, _ = strip_chain(node)
        if isinstance(node, cst.IfExp):
            return [*self._sources(node.body), *self._sources(node.orelse)]
        if isinstance(node, cst.Call) and node.args:
            qualified = self.qualified_name(node.func) or ""
            if last_part(qualified) in MODEL_WRAPPERS:
                return self._sources(node.args[0].value)
        name = dotted_name(node)
        return [] if name is None else [name]

    def moved_to_cpu_only(self, name: str, function: Function | None = None) -> bool:
        """Moved, but only ever to the CPU (`model.to("cpu")`, `model.cpu()`)."""
        moves = [call for call in self.moves_of(name, function) if self.is_device_move(call)]
        return bool(moves) and all(map(self.moves_to_cpu, moves))

    def is_device_move(self, call: cst.Call) -> bool:
        """`.to(device)`, `.cuda()`, `.cpu()`; not a dtype cast such as `.to(torch.float64)`."""
        method = method_name(call)
        if method in ("cuda", "cpu"):
            return True
        if method != "to":
            return False
        for arg in call.args:
            if arg.keyword is not None:
                if arg.keyword.value == "device":
                    return True
                continue
            qualified = self.qualified_name(arg.value) or ""
            return not (qualified.startswith("torch.") and last_part(qualified) in DTYPES)
        return False

    def moves_to_cpu(self, call: cst.Call, depth: int = 2) -> bool:
        method = method_name(call)
        if method != "to":
            return method == "cpu"
        device = next(
            (a.value for a in call.args if a.keyword is None or a.keyword.value == "device"), None
        )
        return device is not None and self.is_cpu_device(device, depth)

    def is_cpu_device(self, node: cst.BaseExpression, depth: int = 2) -> bool:
        """`"cpu"`, `torch.device("cpu")`, or a name only ever assigned one of those."""
        if isinstance(node, cst.SimpleString):
            return node.evaluated_value == "cpu"
        if isinstance(node, cst.Call) and self.qualified_name(node.func) == "torch.device":
            return bool(node.args) and self.is_cpu_device(node.args[0].value, depth)
        name = dotted_name(node)
        if name is None or depth == 0:
            return False
        values = self.assignments.get(name, [])
        return bool(values) and all(self.is_cpu_device(v, depth - 1) for v in values)

    def bind(
        self, target: cst.BaseExpression, value: cst.BaseExpression | None, function: Function
    ) -> None:
        name = dotted_name(target)
        if name is None or value is None:
            return
        self.bind_name(name, value, function)

    def bind_name(self, name: str, value: cst.BaseExpression, function: Function) -> None:
        """Record that `name` is assigned `value` in `function`; the entries of a literal
        dict or list (`nets = {"G": G(), "D": D()}`) are bound as `nets['G']`, `nets['D']`."""
        for key, value_of_key in _literal_entries(self, value):
            entry = key_name(name, key)
            if entry is not None:
                self.bind_name(entry, value_of_key, function)
        self.assignments.setdefault(name, []).append(value)
        function.assignments.setdefault(name, []).append(value)
        self.assigned_to[value] = name
        base, chain = strip_chain(value)
        for call in chain:
            if method_name(call) in MOVE_METHODS:
                self.note_move(name, call, function)
        if not isinstance(base, cst.Call):
            return
        kind = self.kind_of_call(base)
        if kind is not None:
            self.bindings[name] = kind
            self.constructors[name] = base

    def note_move(self, name: str, call: cst.Call, function: Function) -> None:
        self.moves.setdefault(name, []).append(call)
        function.moves.setdefault(name, []).append(call)

    def trained_models(self) -> set[str]:
        """Models whose parameters an optimizer of the file updates (`SGD(model.parameters())`)."""
        trained: set[str] = set()
        for name, kind in self.bindings.items():
            if kind is Kind.OPTIMIZER:
                for site_call in calls_within(self.constructors[name]):
                    func = site_call.func
                    if isinstance(func, cst.Attribute) and func.attr.value in (
                        "parameters",
                        "named_parameters",
                    ):
                        receiver = entry_name(func.value)
                        if receiver is not None:
                            trained.add(receiver)
        return trained

    def trained_classes(self) -> set[str]:
        """The file's module classes whose instances an optimizer trains.

        Followed through one factory function of the file (`model = build_model().to(dev)`).
        """
        classes: set[str] = set()
        for name in self.trained_models():
            for value in self.assignments.get(name, []):
                base, _ = strip_chain(value)
                if not isinstance(base, cst.Call):
                    continue
                callee = self.qualified_name(base.func) or ""
                factory = self.functions.get(callee)
                calls = calls_within(factory.node) if factory and factory.node else [base]
                classes |= {
                    qualified
                    for call in calls
                    if self.is_module_class(qualified := self.qualified_name(call.func) or "")
                }
        return classes

    # -- events ------------------------------------------------------------------------

    def clears_gradients(self, function_name: str) -> bool:
        """Whether calling the file's function `function_name` clears gradients."""
        return function_name in self._clearing_functions

    def clears_for(self, events: Sequence[GradEvent], optimizer: str | None) -> bool:
        """Whether `events` contain something that clears the gradients `optimizer` steps on."""
        for event in events:
            if event.kind is EventKind.CLEAR and event.target in (None, optimizer):
                return True
            if event.kind is EventKind.CALL and self.clears_gradients(event.target or ""):
                return True
        return False

    def expand(self, events: Sequence[GradEvent], depth: int = 4) -> list[GradEvent]:
        """`events` with each call to a function of the file replaced by that function's events."""
        expanded: list[GradEvent] = []
        for event in events:
            function = (
                self.functions.get(event.target or "") if event.kind is EventKind.CALL else None
            )
            if function is not None and depth > 0:
                expanded.extend(self.expand(function.events, depth - 1))
            else:
                expanded.append(event)
        return expanded

    def site_of(self, call: cst.CSTNode) -> CallSite | None:
        """The call site of a call node of the file."""
        return self._sites.get(call)

    @functools.cached_property
    def _sites(self) -> dict[cst.CSTNode, CallSite]:
        return {site.node: site for site in self.calls}

    def callers_of(self, function_name: str) -> list[CallSite]:
        """The call sites of a function of the file (`f(...)` or `self.f(...)`)."""
        return [site for site in self.calls if called_function_name(site.node) == function_name]

    def grad_disabled(self, site: CallSite) -> bool:
        """Gradients are off at `site`: under no_grad, in a no_grad function, or in a function
        that the file only ever calls with gradients off."""
        if site.no_grad or site.function.no_grad:
            return True
        function = site.function
        if function.node is None:
            return False
        callers = self.callers_of(function.name)
        return bool(callers) and all(c.no_grad or c.function.no_grad for c in callers)

    def _classify_events(self) -> None:
        owners: list[Loop | Function] = [*self.loops, *self.all_functions]
        for owner in owners:
            owner.events = [e for e in map(self._classify, owner.raw) if e is not None]
        clearing = {
            function.name
            for function in self.all_functions
            if function.node is not None
            and any(event.kind is EventKind.CLEAR for event in function.events)
        }
        changed = True
        while changed:
            changed = False
            for name, function in self.functions.items():
                if name not in clearing and any(
                    event.kind is EventKind.CALL and event.target in clearing
                    for event in function.events
                ):
                    clearing.add(name)
                    changed = True
        self._clearing_functions = frozenset(clearing)

    def _classify(self, node: cst.CSTNode) -> GradEvent | None:
        if isinstance(node, cst.Assign | cst.AugAssign | cst.AnnAssign):
            return GradEvent(EventKind.CLEAR, None, node)
        assert isinstance(node, cst.Call)
        func = node.func
        if self.qualified_name(func) == "torch.autograd.backward":
            return GradEvent(EventKind.BACKWARD, None, node)
        called = called_function_name(node)
        if called is not None:
            return GradEvent(EventKind.CALL, called, node)
        if not isinstance(func, cst.Attribute):
            return None
        method, receiver = func.attr.value, func.value
        if method == "backward":
            return GradEvent(EventKind.BACKWARD, None, node)
        if method == "step":
            return self._classify_step(node, receiver)
        if method == "zero_grad":
            is_optimizer = self.kind_of(receiver) is Kind.OPTIMIZER
            return GradEvent(EventKind.CLEAR, dotted_name(receiver) if is_optimizer else None, node)
        if method in ("zero_", "fill_") and is_grad(receiver):
            return GradEvent(EventKind.CLEAR, None, node)
        if method == "eval" and not node.args:
            return GradEvent(EventKind.EVAL_MODE, entry_name(receiver), node)
        if method == "train":
            turns_off = bool(node.args) and is_false(node.args[0].value)
            kind = EventKind.EVAL_MODE if turns_off else EventKind.TRAIN_MODE
            return GradEvent(kind, entry_name(receiver), node)
        return None

    def _classify_step(self, node: cst.Call, receiver: cst.BaseExpression) -> GradEvent | None:
        kind = self.kind_of(receiver)
        if kind is Kind.SCALER:
            optimizer = dotted_name(node.args[0].value) if node.args else None
            return GradEvent(EventKind.STEP, optimizer, node)
        if kind is Kind.SCHEDULER:
            return GradEvent(EventKind.SCHEDULER_STEP, dotted_name(receiver), node)
        if kind is Kind.OPTIMIZER:
            event_kind = EventKind.CLOSURE_STEP if node.args else EventKind.STEP
            return GradEvent(event_kind, dotted_name(receiver), node)
        return None


# Methods of a module object that are its own functions, not nn.Module calls.
_PLAIN_FUNCTIONS = ("forward", "backward")
MODEL_WRAPPERS = frozenset({"DistributedDataParallel", "DataParallel", "compile", "DDP"})


def _literal_entries(
    facts: Facts, value: cst.BaseExpression
) -> Iterator[tuple[cst.BaseExpression, cst.BaseExpression]]:
    """The (key, value) pairs of a dict/list/tuple literal, also inside `nn.ModuleDict(...)`
    or `nn.ModuleList(...)`."""
    if (
        isinstance(value, cst.Call)
        and len(value.args) == 1
        and last_part(facts.qualified_name(value.func) or "") in ("ModuleDict", "ModuleList")
    ):
        value = value.args[0].value
    if isinstance(value, cst.Dict):
        for element in value.elements:
            if isinstance(element, cst.DictElement):
                yield element.key, element.value
    elif isinstance(value, cst.List | cst.Tuple):
        for index, item in enumerate(value.elements):
            if isinstance(item, cst.StarredElement):
                return
            yield cst.Integer(str(index)), item.value


def argument_for(call: cst.Call, function: Function, parameter: str) -> cst.BaseExpression | None:
    """The argument `call` passes for `parameter` of `function` (methods skip `self`)."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == parameter:
            return arg.value
    names = function.parameter_names()
    if names and names[0] == "self":
        names = names[1:]
    index = names.index(parameter) if parameter in names else -1
    positional = [arg for arg in call.args if arg.keyword is None and not arg.star]
    return positional[index].value if 0 <= index < len(positional) else None


def creation_without_device(facts: Facts, call: cst.Call) -> bool:
    """`torch.zeros(3)`: a tensor factory called with no `device=` argument."""
    qualified = facts.qualified_name(call.func)
    if qualified is None or not is_creation_function(qualified):
        return False
    return not any(arg.keyword is not None and arg.keyword.value == "device" for arg in call.args)
