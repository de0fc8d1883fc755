"""PG201-PG203 in the code: tensors and modules on different devices, .numpy() on them."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import libcst as cst

from pitfall_guard.findings import Edit, Fix
from pitfall_guard.static.facts import (
    CallSite,
    Facts,
    Kind,
    Loop,
    argument_for,
    calls_within,
    creation_without_device,
    loop_source,
    strip_chain,
)
from pitfall_guard.static.names import dotted_name
from pitfall_guard.static.rule import FileContext, StaticRule
from pitfall_guard.static.tensors import (
    TensorOrigins,
    method_name,
    model_name,
    string_value,
)
from pitfall_guard.static.torch_api import is_creation_function
from pitfall_guard.static.values import argparse_default, option_flag

from .hardcoded_cuda import CUDA_STRING, HardcodedCuda


class DeviceMismatch(StaticRule):
    """
    ## What it catches
    A model moved to a device (`model.to(device)`) that is fed a batch straight from the
    data loader, never moved (and the reverse: a moved batch, a model never moved); a loss
    target left on the CPU; a tensor created in the loop or inside `forward` without a device
    while the model is moved; a model sent to a `--device` that defaults to "cpu" fed a batch
    moved with `.cuda()`; and arithmetic between a tensor moved with `.cuda()` and one never
    moved.

    ## Why it matters
    On a GPU machine the first forward pass fails with "Expected all tensors to be on the same
    device", or, in code that only runs on some batches, hours into the run. On a CPU-only
    machine everything silently stays on the CPU, so the bug waits for the first GPU run.

    ## Example
    ```python
    model = Net().to(device)
    for images, labels in train_loader:
        outputs = model(images)
    ```

    ## Fix
    Move every batch to the model's device (`images = images.to(device, non_blocking=True)`),
    and create tensors in `forward` on the input's device (`torch.zeros(n, device=x.device)`
    or `x.new_zeros(n)`).
    """

    code = "PG201"
    name = "device-mismatch"
    summary = "a tensor and the module or tensor it meets are on different devices"
    hint = "move the batch with .to(device) before the forward pass"

    VALID = (
        # the batch follows the device option
        """
import argparse
import torch
def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()
args = parse_args()
model = Net().to(args.device)
for images, target in train_loader:
    images = images.to(args.device, non_blocking=True)
    output = model(images)
""",
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net().to(device)
for images, labels in train_loader:
    images, labels = images.to(device), labels.to(device)
    outputs = model(images)
""",
        # a helper moves the batch
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net().to(device)
for batch in loader:
    inputs, targets = to_device(batch, device)
    outputs = model(inputs)
""",
        # the model stays on the CPU
        """
import torch
model = Net()
for images, labels in train_loader:
    outputs = model(images)
""",
        # loaders made by a helper of another file (accelerator.prepare, say)
        """
import torch
from utils import get_training_utilities
def evaluate(model, dataloader):
    model.eval()
    for batch in dataloader:
        with torch.no_grad():
            outputs = model(**batch)
model, train_dataloader, eval_dataloader = get_training_utilities()
model.to("cuda")
evaluate(model, eval_dataloader)
""",
        # a helper for modules and plain functions alike
        """
import torch
def accuracy(data_iter, net, device):
    net = net.to(device) if isinstance(net, torch.nn.Module) else net
    for X, y in data_iter:
        if isinstance(net, torch.nn.Module):
            net(X.to(device))
        else:
            net(X)
""",
        # a collate_fn moves the batches
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
loader = torch.utils.data.DataLoader(data, collate_fn=lambda b: move(b, device))
model = Net().to(device)
for x, y in loader:
    model(x)
""",
        """
import torch
from torch import nn
class Net(nn.Module):
    def forward(self, x):
        mask = torch.ones(x.size(0), device=x.device)
        noise = torch.randn(x.shape).to(x.device)
        return x * mask + noise
model = Net().to("cuda" if torch.cuda.is_available() else "cpu")
""",
        # the model is moved by a helper, by a wrapper, or not needed on the device
        """
import torch
from torch import nn
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = nn.Linear(784, 10)
model = setup(model, device)
other = nn.Linear(784, 10)
ddp = torch.nn.parallel.DistributedDataParallel(other)
cpu_model = nn.Linear(784, 10)
for images, labels in train_loader:
    images = images.to(device)
    model(images)
    other(images)
    features = images.cpu()
    cpu_model(features)
""",
        # noise made on the device, or moved after
        """
import torch
from torch import nn
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
generator = nn.Sequential(nn.Linear(100, 784), nn.Tanh()).to(device)
for real, _ in train_loader:
    z = torch.randn(real.size(0), 100, device=device)
    fake = generator(z)
    w = torch.randn(real.size(0), 100)
    w = w.to(device)
    generator(w)
""",
        # the target is moved, or the model stays on the CPU
        """
import torch
from torch import nn
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
train_loader = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)
model = nn.Linear(784, 10).to(device)
cpu_model = nn.Linear(784, 10)
criterion = nn.CrossEntropyLoss()
for images, labels in train_loader:
    images, labels = images.to(device), labels.to(device)
    loss = criterion(model(images), labels)
for x, y in train_loader:
    loss = criterion(cpu_model(x), y)
""",
        # a tokenizer's batch (a mapping) moves in place
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = AutoModel.from_pretrained("bert-base-cased").to(device)
for step, batch in enumerate(train_dataloader):
    batch.to(device)
    outputs = model(**batch)
""",
        # modules move in place; a move to the CPU of a CPU tensor changes nothing
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net()
model.to(device)
criterion = torch.nn.CrossEntropyLoss()
criterion.to(device)
for images, labels in train_loader:
    images = images.to(device)
    images.cpu()
""",
    )
    INVALID = (
        # the device option defaults to the CPU, the batch goes to CUDA
        """
import argparse
import torch
def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()
args = parse_args()
model = Net().to(args.device)
for images, target in train_loader:
    images = images.cuda(non_blocking=True)
    output = model(images)  # expect: PG201
""",
        # the device comes from an argparse default
        """
import argparse
import torch
parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cuda")
args = parser.parse_args()
device = args.device
model = Net().to(device)
train_loader = torch.utils.data.DataLoader(dataset, batch_size=64)
for x, y in train_loader:
    loss = loss_fn(model(x), y)  # expect: PG201
""",
        # the noise of a GAN is made on the CPU, the generator is on the device
        """
import torch
from torch import nn
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
generator = nn.Sequential(nn.Linear(100, 784), nn.Tanh()).to(device)
for real, _ in train_loader:
    z = torch.randn(real.size(0), 100)  # expect: PG201
    fake = generator(z)
""",
        # the output is on the device, the target is not
        """
import torch
from torch import nn
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
train_loader = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)
model = nn.Linear(784, 10).to(device)
criterion = nn.CrossEntropyLoss()
for images, labels in train_loader:
    outputs = model(images.to(device))
    loss = criterion(outputs, labels)  # expect: PG201
    other = nn.functional.cross_entropy(model(images.to(device)), labels)  # expect: PG201
""",
        # the reverse: the batch moves, the model stays on the CPU
        """
import torch
from torch import nn
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for images, labels in train_loader:
    images, labels = images.to(device), labels.to(device)
    outputs = model(images)  # expect: PG201
""",
        # the moved copy is dropped: a tensor does not move in place
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net().to(device)
noise = torch.randn(16, 100)
noise.to(device)  # expect: PG201
for images, labels in train_loader:
    images.to(device)  # expect: PG201
    labels = labels.to(device)
""",
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net().to(device)
train_loader = torch.utils.data.DataLoader(train_set, batch_size=64)
for epoch in range(3):
    for images, labels in train_loader:
        outputs = model(images)  # expect: PG201
""",
        """
import torch
from torch import nn
class Net(nn.Module):
    def forward(self, x):
        hidden = torch.zeros(x.size(0), 128)  # expect: PG201
        return self.rnn(x, hidden)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
net = Net()
net.to(device)
""",
        """
import torch
cpu_tensor = torch.tensor([[1, 2], [3, 4]])
gpu_tensor = torch.randn(2, 2).cuda()
total = cpu_tensor + gpu_tensor  # expect: PG201
""",
    )

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._not_modules: set[cst.Call] = set()
        self._dropped_moves: list[cst.Call] = []
        self._mappings: set[str] = set()
        self._stays: dict[str, bool] = {}

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.star == "**" and isinstance(node.value, cst.Name):
            self._mappings.add(node.value.value)

    def visit_Subscript(self, node: cst.Subscript) -> None:
        index = node.slice[0].slice if len(node.slice) == 1 else None
        if (
            isinstance(node.value, cst.Name)
            and isinstance(index, cst.Index)
            and isinstance(index.value, cst.SimpleString)
        ):
            self._mappings.add(node.value.value)

    def visit_Expr(self, node: cst.Expr) -> None:
        # `images.to(device)` as a statement: a module moves in place, a tensor does not.
        call = node.value
        if (
            isinstance(call, cst.Call)
            and isinstance(call.func, cst.Attribute)
            and isinstance(call.func.value, cst.Name)
            and method_name(call) in ("to", "cuda")
        ):
            self._dropped_moves.append(call)

    def visit_If(self, node: cst.If) -> None:
        # `if isinstance(net, nn.Module): ... else: net(X)`: there `net` is a plain function.
        if node.orelse is not None and "isinstance(" in cst.Module([]).code_for_node(node.test):
            self._not_modules.update(calls_within(node.orelse))

    def leave_Module(self, original_node: cst.Module) -> None:
        facts = self.facts
        for site in facts.calls:
            if site.node not in self._not_modules:
                self._check_forward_call(site)
                self._check_loss_target(site)
        self._check_forward_creations()
        for operation in facts.name_operations:
            self._check_mixed_arithmetic(operation)
        self._check_dropped_moves()

    def _check_dropped_moves(self) -> None:
        sites = {site.node: site for site in self.facts.calls}
        for call in self._dropped_moves:
            site = sites.get(call)
            assert isinstance(call.func, cst.Attribute) and isinstance(call.func.value, cst.Name)
            name = call.func.value.value
            if site is None or not self.facts.is_device_move(call) or self.facts.moves_to_cpu(call):
                continue
            if self._is_tensor(name, site):
                self.report(
                    call,
                    f"'{name}.{method_name(call)}(...)' returns a moved copy and the result is "
                    f"dropped: '{name}' itself stays where it was (only modules move in place)",
                    hint=f"{name} = {cst.Module([]).code_for_node(call)}",
                )

    def _is_tensor(self, name: str, site: CallSite) -> bool:
        """A batch from a data loader, or a name only ever bound to a torch tensor factory.

        Mappings are not: a tokenizer's `BatchEncoding.to()` moves in place (`model(**batch)`,
        `batch["input_ids"]`).
        """
        if self.facts.kind_of_name(name) in (Kind.MODEL, Kind.LOSS) or name in self._mappings:
            return False
        for loop in site.loops:
            if name in loop.target_names() and self._iterates_loader(loop):
                return True
        values = self.facts.assignments_in(name, site.function)
        return bool(values) and all(
            isinstance(value, cst.Call)
            and is_creation_function(self.facts.qualified_name(value.func) or "")
            for value in values
        )

    def _iterates_loader(self, loop: Loop) -> bool:
        iterable = loop_source(loop)
        return iterable is not None and self.facts.kind_of(iterable) is Kind.LOADER

    def _check_forward_call(self, site: CallSite) -> None:
        model = model_name(self.facts, site.node.func)
        scope = site.function
        if model is not None and not self.facts.is_moved(model, scope):
            self._check_model_left_behind(site, model)
        if model is not None and self._check_default_cpu_model(site, model):
            return
        if (
            model is None
            or not self.facts.is_moved(model, scope)
            or self.facts.moved_to_cpu_only(model, scope)
        ):
            return
        self._check_created_input(site, model)
        for arg in site.node.args:
            name = self._unmoved_batch(arg.value, site.loops)
            if name is not None:
                self.report(
                    site.node,
                    f"model '{model}' was moved to a device, but '{name}' comes straight from "
                    "the data loader and was never moved: on a GPU this forward pass fails",
                    hint=f"{name} = {name}.to(device, non_blocking=True) before calling {model}",
                )
                return

    def _check_default_cpu_model(self, site: CallSite, model: str) -> bool:
        """`model.to(args.device)` with `--device` defaulting to "cpu", fed `images.cuda()`:
        the default run puts them on different devices."""
        flags = []
        for move in self.facts.moves_of(model, site.function):
            target = move.args[0].value if method_name(move) == "to" and move.args else None
            if not isinstance(target, cst.Attribute):
                return False
            default = argparse_default(target, self.facts)
            if default is None or string_value(default) != "cpu":
                return False
            flags.append(option_flag(target))
        if not flags:
            return False
        for arg in site.node.args:
            name = dotted_name(arg.value)
            if name is not None and self._on_gpu(name):
                self.report(
                    site.node,
                    f"model '{model}' goes to the device {flags[0]} names, by default \"cpu\", "
                    f"but '{name}' is moved to CUDA: the default run fails with tensors on "
                    "different devices",
                    hint=f"move '{name}' with .to(the same device) instead of .cuda()",
                )
                return True
        return False

    def _check_loss_target(self, site: CallSite) -> None:
        """`criterion(model(images), labels)`: the output is on the model's device, the
        target comes straight from the loader."""
        func = site.node.func
        qualified = self.facts.qualified_name(func) or ""
        is_loss = (
            self.facts.kind_of(func) is Kind.LOSS
            or (qualified.startswith("torch.nn.functional.") and "loss" in qualified)
            or qualified in ("torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss")
        )
        if not is_loss or len(site.node.args) < 2:
            return
        output = strip_chain(site.node.args[0].value)[0]
        if isinstance(output, cst.Name):
            values = site.function.assignments.get(output.value, [])
            output = strip_chain(values[0])[0] if len(values) == 1 else output
        model = model_name(self.facts, output.func) if isinstance(output, cst.Call) else None
        if (
            model is None
            or not isinstance(output, cst.Call)
            or not self._moved_input(output, site)
            or not self.facts.is_moved(model, site.function)
            or self.facts.moved_to_cpu_only(model, site.function)
        ):
            return  # an unmoved input is said at the forward pass already
        target = self._unmoved_batch(site.node.args[1].value, site.loops)
        if target is not None:
            self.report(
                site.node,
                f"the output of '{model}' is on the model's device, but the target '{target}' "
                "comes straight from the data loader and was never moved: on a GPU the loss "
                "fails",
                hint=f"{target} = {target}.to(device, non_blocking=True)",
            )

    def _check_created_input(self, site: CallSite, model: str) -> None:
        """`z = torch.randn(n, 100)` fed to a model on a device (a GAN's noise, a hidden
        state): made on the CPU and never moved."""
        if not site.loops or not site.node.args:
            return
        value = site.node.args[0].value
        if not isinstance(value, cst.Name) or self.facts.is_moved(value.value, site.function):
            return
        made = site.function.assignments.get(value.value, [])
        if made and all(
            isinstance(v, cst.Call)
            and creation_without_device(self.facts, v)
            and dotted_name(v.func) not in ("torch.tensor", "torch.as_tensor")
            for v in made
        ):
            for creation in made:
                self.report(
                    creation,
                    f"'{value.value}' is created on the CPU and fed to '{model}', which is moved "
                    "to a device: on a GPU the forward pass fails",
                    hint="create it where the model is: device=device (or x.new_zeros(...))",
                )

    def _moved_input(self, forward: cst.Call, site: CallSite) -> bool:
        """Whether the forward's input was moved: `model(x.to(device))`, or `x = x.to(...)`."""
        if not forward.args:
            return False
        value = forward.args[0].value
        if isinstance(value, cst.Name):
            values = site.function.assignments.get(value.value, [])
            value = values[-1] if values else value
        moves = strip_chain(value)[1] if isinstance(value, cst.Call) else []
        return any(self.facts.is_device_move(m) and not self.facts.moves_to_cpu(m) for m in moves)

    def _check_model_left_behind(self, site: CallSite, model: str) -> None:
        """The reverse mismatch: the batch is moved to a device, the model never is."""
        if not site.node.args or not self._stays_put(model):
            return
        batch = site.node.args[0].value
        if not isinstance(batch, cst.Name) or not site.loops:
            return
        moves = [
            value
            for value in site.function.assignments.get(batch.value, [])
            if isinstance(value, cst.Call)
            and self.facts.is_device_move(value)
            and dotted_name(strip_chain(value)[0]) == batch.value
        ]
        if moves and all(not self.facts.moves_to_cpu(move) for move in moves):
            self.report(
                site.node,
                f"'{batch.value}' is moved to a device, but model '{model}' never is: on a GPU "
                "this forward pass fails with inputs and weights on different devices",
                hint=f"{model} = {model}.to(device) once, before the loop",
            )

    def _stays_put(self, model: str) -> bool:
        """A model built here and never moved, wrapped or handed to a function (which might
        move it: `accelerator.prepare(model)`, `DDP(model)`, `setup(model)`)."""
        if model not in self._stays:
            self._stays[model] = self._never_moved(model)
        return self._stays[model]

    def _never_moved(self, model: str) -> bool:
        if "." in model or self.facts.moves.get(model):
            return False
        values = self.facts.assignments.get(model, [])
        built = bool(values) and all(
            isinstance(v, cst.Call) and not strip_chain(v)[1] and self.facts.kind_of_call(v)
            for v in values
        )
        handed = any(
            dotted_name(arg.value) == model for site in self.facts.calls for arg in site.node.args
        )
        parameter = any(model in f.parameter_names() for f in self.facts.all_functions)
        return built and not handed and not parameter

    def _unmoved_batch(self, value: cst.BaseExpression, loops: tuple[Loop, ...]) -> str | None:
        base, chain = strip_chain(value)
        if chain or isinstance(base, cst.Call):
            return None
        if isinstance(base, cst.Subscript):
            base = base.value
        if not isinstance(base, cst.Name):
            return None
        for loop in loops:
            if base.value in loop.target_names() and base.value not in loop.assigned:
                if base.value in self._dropped:
                    return None  # said once, where the move's result is dropped
                return base.value if self._yields_host_batches(loop) else None
        return None

    @functools.cached_property
    def _dropped(self) -> set[str]:
        """The names whose `.to(device)` result is dropped (read once the walk is done)."""
        return {
            call.func.value.value
            for call in self._dropped_moves
            if isinstance(call.func, cst.Attribute) and isinstance(call.func.value, cst.Name)
        }

    def _yields_host_batches(self, loop: Loop) -> bool:
        if not self._iterates_loader(loop):
            return False
        iterable = loop_source(loop)
        assert iterable is not None
        name = dotted_name(iterable)
        if name is None:
            return False
        function = loop.function
        if function is not None and name in function.parameter_names():
            # Handed in: host batches when every caller of the file passes a plain DataLoader.
            passed = [
                argument_for(site.node, function, name)
                for site in self.facts.callers_of(function.name)
            ]
            return bool(passed) and all(
                isinstance(value, cst.Name) and self._plain_loader(value.value) for value in passed
            )
        return self._plain_loader(name)

    def _plain_loader(self, name: str) -> bool:
        """A DataLoader built in this file that yields the data set's tensors as they are."""
        if len(self.facts.assignments.get(name, [])) > 1:
            return False  # reassigned, e.g. by accelerator.prepare(): who knows where it yields
        constructor = self.facts.constructors.get(name)
        if constructor is None:
            # A loader made elsewhere (a helper, accelerator.prepare) may well yield batches
            # already on the device.
            return False
        if not (self.facts.qualified_name(constructor.func) or "").startswith("torch."):
            return False  # torchtext's iterators are handed the device and batch onto it
        for arg in constructor.args:
            if arg.keyword is not None and arg.keyword.value == "collate_fn":
                return False
        return not _mentions_move(constructor)

    def _check_forward_creations(self) -> None:
        moved_classes = {
            dotted_name(self.facts.constructors[name].func)
            for name in self.facts.moved
            if name in self.facts.constructors
        }
        moved_into = _receivers_of_moves(self.facts)
        for site in self.facts.calls:
            function = site.function
            target = self.facts.assigned_to.get(site.node)
            if (
                function.node is None
                or function.name != "forward"
                or function.class_name not in moved_classes
                or site.node in moved_into
                or (target is not None and self.facts.is_moved(target, function))
                or not creation_without_device(self.facts, site.node)
                or dotted_name(site.node.func) in ("torch.tensor", "torch.as_tensor")
            ):
                continue
            self.report(
                site.node,
                f"this tensor is created on the CPU inside {function.class_name}.forward, but "
                "the model is moved to a device: on a GPU the forward pass fails",
                hint="create it on the input's device: device=x.device (or x.new_zeros(...))",
            )

    def _check_mixed_arithmetic(self, node: cst.BinaryOperation) -> None:
        left, right = dotted_name(node.left) or "", dotted_name(node.right) or ""
        if (self._on_gpu(left) and self._on_cpu(right)) or (
            self._on_gpu(right) and self._on_cpu(left)
        ):
            self.report(
                node,
                f"'{left}' and '{right}' are on different devices (one was moved with "
                ".cuda()/.to(), the other never was): this raises on a GPU",
                hint="move both to the same device first, e.g. cpu_tensor.to(gpu_tensor.device)",
            )

    def _on_gpu(self, name: str) -> bool:
        values = self.facts.assignments.get(name, [])
        return bool(values) and all(
            any(method_name(call) == "cuda" or _is_cuda_to(call) for call in strip_chain(v)[1])
            for v in values
        )

    def _on_cpu(self, name: str) -> bool:
        values = self.facts.assignments.get(name, [])
        return bool(values) and all(
            isinstance(v, cst.Call) and creation_without_device(self.facts, v) for v in values
        )


def _is_cuda_to(call: cst.Call) -> bool:
    if method_name(call) != "to" or not call.args:
        return False
    value = string_value(call.args[0].value)
    return value is not None and CUDA_STRING.match(value) is not None


def _mentions_move(node: cst.CSTNode) -> bool:
    """Whether `.to(` or `.cuda(` appears anywhere inside `node` (a dataset built on device)."""
    code = cst.Module([]).code_for_node(node)
    return ".to(" in code or ".cuda(" in code


def _receivers_of_moves(facts: Facts) -> set[cst.CSTNode]:
    """Calls whose result is moved afterwards: `torch.triu(torch.ones(n, n)).to(x.device)`."""
    moved: set[cst.CSTNode] = set()
    for site in facts.calls:
        func = site.node.func
        if isinstance(func, cst.Attribute) and func.attr.value in ("to", "cuda", "type_as"):
            moved.update(calls_within(func.value))
    return moved


def _numpy_calls(facts: Facts) -> Iterator[tuple[CallSite, cst.BaseExpression]]:
    for site in facts.calls:
        func = site.node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "numpy" and not site.node.args:
            yield site, func.value


class NumpyOnCudaTensor(StaticRule):
    """
    ## What it catches
    `.numpy()` on a tensor that may be on a GPU (a model output, a batch moved with
    `.to(device)`, anything computed from them) with no `.cpu()` before it.

    ## Why it matters
    NumPy arrays live in host memory: `.numpy()` on a CUDA tensor raises "can't convert
    cuda:0 device type tensor to numpy". Tested on a CPU-only laptop the script works, then
    fails on the GPU machine, usually at the end of the first epoch, when metrics are computed.

    ## Example
    ```python
    preds = model(images.to(device)).argmax(dim=1)
    all_preds.append(preds.numpy())
    ```

    ## Fix
    Copy the tensor to the host first: `preds.cpu().numpy()` (`.detach().cpu().numpy()` for
    tensors that require grad).
    """

    code = "PG202"
    name = "numpy-on-cuda-tensor"
    summary = ".numpy() on a tensor that may be on a GPU"
    hint = "call .cpu() before .numpy()"

    VALID = (
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net().to(device)
with torch.no_grad():
    preds = model(images.to(device)).argmax(1)
    array = preds.cpu().numpy()
""",
        """
import torch
import numpy as np
tensor = torch.from_numpy(np.ones(5))
back = tensor.numpy()
""",
    )
    INVALID = (
        # a loss computed from device tensors is on the device too, detached or not
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net().to(device)
criterion = torch.nn.MSELoss()
for x, y in loader:
    loss = criterion(model(x.to(device)), y.to(device))
    history = loss.detach().numpy()  # expect: PG202
""",
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net().to(device)
with torch.no_grad():
    outputs = model(images.to(device))
    preds = outputs.argmax(dim=1)
    collected.append(preds.numpy())  # expect: PG202
""",
        """
import torch
gpu_tensor = torch.randn(2, 3).cuda()
array = gpu_tensor.numpy()  # expect: PG202
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        origins = TensorOrigins(self.facts)
        for site, receiver in _numpy_calls(self.facts):
            root = origins.root(receiver)
            if isinstance(root, cst.Call) and method_name(root) == "cpu":
                continue
            if origins.is_on_device(receiver, site.function):
                self.report(
                    site.node,
                    f"'{_code(receiver)}' may be on a GPU, and .numpy() only works on CPU "
                    "tensors: this line raises on a GPU machine",
                    fix=_insert_before_numpy(self, site.node, ".cpu()", "copy it to the host"),
                )


class NumpyOnGradTensor(StaticRule):
    """
    ## What it catches
    `.numpy()` on a tensor that requires grad (a model output outside `torch.no_grad()`, a
    tensor created with `requires_grad=True`, or something computed from them) with no
    `.detach()` before it.

    ## Why it matters
    It raises "Can't call numpy() on Tensor that requires grad". Fixing it with `.data` hides
    the tensor from autograd's version checks; `.detach()` is the supported way.

    ## Example
    ```python
    outputs = model(images)
    probabilities = outputs.softmax(dim=1).numpy()
    ```

    ## Fix
    `outputs.detach().numpy()`, or compute metrics under `torch.no_grad()` /
    `torch.inference_mode()`.
    """

    code = "PG203"
    name = "numpy-on-grad-tensor"
    summary = ".numpy() on a tensor that requires grad"
    hint = "call .detach() before .numpy() (or compute it under torch.no_grad())"

    VALID = (
        """
import torch
model = Net()
outputs = model(images)
array = outputs.detach().numpy()
labels = outputs.argmax(1).numpy()
with torch.no_grad():
    probs = model(images).softmax(1).numpy()
""",
        """
import torch
model = Net()
snapshot = [p.detach().cpu().numpy() for p in model.parameters()]
for name, p in model.named_parameters():
    print(name, p.data.numpy())
w = model.fc.weight.data.numpy()
""",
    )
    INVALID = (
        """
import torch
model = Net()
outputs = model(images)
probabilities = outputs.softmax(dim=1).numpy()  # expect: PG203
""",
        """
import torch
x = torch.tensor(2.0, requires_grad=True)
y = x ** 3
print(y.numpy())  # expect: PG203
""",
        # parameters require grad, even under no_grad
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(4, 2))
weights = model[0].weight.detach().numpy()
with torch.no_grad():
    first = model.weight.numpy()  # expect: PG203
for p in model.parameters():
    print(p.numpy())  # expect: PG203
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        origins = TensorOrigins(self.facts)
        # A file that freezes parameters (`requires_grad = False`) may hold ones without grad.
        source = self.context.source
        freezes = "requires_grad_(False)" in source or bool(_FREEZES.search(source))
        parameters = self._parameter_names()
        for site, receiver in _numpy_calls(self.facts):
            # A parameter requires grad even under no_grad: `.numpy()` still raises there.
            is_parameter = not freezes and self._is_parameter(receiver, site, parameters)
            if self.facts.grad_disabled(site) and not is_parameter:
                continue
            root = origins.root(receiver)
            if isinstance(root, cst.Call) and method_name(root) == "detach":
                continue
            if is_parameter or origins.requires_grad(receiver, site.function):
                self.report(
                    site.node,
                    f"'{_code(receiver)}' requires grad, and .numpy() refuses such tensors: "
                    "this line raises",
                    fix=_insert_before_numpy(self, site.node, ".detach()", "detach it first"),
                )

    def _parameter_names(self) -> set[tuple[str, Loop]]:
        """Loop variables over `model.parameters()` (or the values of `named_parameters()`)."""
        found: set[tuple[str, Loop]] = set()
        for loop in self.facts.loops:
            iterable = loop.iterable
            if not isinstance(iterable, cst.Call) or not isinstance(loop.node, cst.For):
                continue
            method = method_name(iterable)
            target = loop.node.target
            if method == "parameters" and isinstance(target, cst.Name):
                found.add((target.value, loop))
            elif method == "named_parameters" and isinstance(target, cst.Tuple):
                last = target.elements[-1].value if target.elements else None
                if isinstance(last, cst.Name):
                    found.add((last.value, loop))
        return found

    def _is_parameter(
        self, receiver: cst.BaseExpression, site: CallSite, loop_names: set[tuple[str, Loop]]
    ) -> bool:
        """`model.fc.weight`, `model.bias`, or `p` in `for p in model.parameters()`."""
        if isinstance(receiver, cst.Name):
            return any(name == receiver.value and loop in site.loops for name, loop in loop_names)
        if not isinstance(receiver, cst.Attribute) or receiver.attr.value not in ("weight", "bias"):
            return False
        root: cst.BaseExpression = receiver.value
        while isinstance(root, cst.Attribute):
            root = root.value
        return isinstance(root, cst.Name) and self.facts.kind_of_name(root.value) is Kind.MODEL


_FREEZES = re.compile(r"requires_grad\s*=\s*False")


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _insert_before_numpy(rule: StaticRule, call: cst.Call, text: str, description: str) -> Fix:
    assert isinstance(call.func, cst.Attribute)
    end = rule.context.position(call.func.value).end
    column = end.column + 1
    return Fix(description, (Edit(end.line, column, end.line, column, text),), safe=True)


STATIC_RULES: tuple[type[StaticRule], ...] = (
    DeviceMismatch,
    NumpyOnCudaTensor,
    NumpyOnGradTensor,
    HardcodedCuda,
)
