"""PG4xx in the code: layers that do not fit the data, softmax fed to cross-entropy."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import libcst as cst

from pitfall_guard.static.facts import CallSite, Facts, Kind, strip_chain
from pitfall_guard.static.names import dotted_name, last_part
from pitfall_guard.static.rule import StaticRule
from pitfall_guard.static.shapes import (
    UNKNOWN_INPUT,
    ForwardInterpreter,
    Mismatch,
    Shape,
    ShapeTracer,
    Unknown,
    builder_result,
    forward_of,
    literal_int,
    module_layers,
)
from pitfall_guard.static.torch_api import DATASET_INPUT_SHAPES, is_cross_entropy, is_softmax

from .loss_broadcast import LossBroadcast

_SHAPE_COMMENT = re.compile(r"pitfall-guard:\s*input-shape\s*=\s*([\d\s,]+)")
_RESIZING_TRANSFORMS = ("Resize", "CenterCrop", "RandomResizedCrop", "FiveCrop", "Pad")


def input_shape(facts: Facts) -> tuple[Shape, bool] | None:
    """The per-sample input shape the file's models receive, when the code shows it, and
    whether it is certain (a comment or a dataset) rather than a tensor seen somewhere."""
    for comment in facts.comments:
        match = _SHAPE_COMMENT.search(comment)
        if match:
            parts = match.group(1).replace(" ", "").split(",")
            return tuple(int(part) for part in parts if part), True
    qualified = [facts.qualified_name(site.node.func) or "" for site in facts.calls]
    if any(last_part(name) in _RESIZING_TRANSFORMS for name in qualified):
        return None
    for name in qualified:
        if name.startswith("torchvision.datasets.") and last_part(name) in DATASET_INPUT_SHAPES:
            if _reshapes_batches(facts):
                return None  # `b_x.view(-1, 28 * 28)` before the model: not the data set's shape
            return DATASET_INPUT_SHAPES[last_part(name)], True
    for site, name in zip(facts.calls, qualified, strict=True):
        if (
            name in ("torch.randn", "torch.rand", "torch.zeros", "torch.ones")
            and len(site.node.args) >= 2
        ):
            try:
                sizes = tuple(literal_int(arg.value) for arg in site.node.args)
            except Unknown:
                continue
            return sizes[1:], False
    return None


_RESHAPES = ("view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose")


def _reshapes_batches(facts: Facts) -> bool:
    """Whether code outside the models' `forward` reshapes tensors (the loop, a transform)."""
    for site in facts.calls:
        if site.function.class_name is not None and facts.is_module_class(site.function.class_name):
            continue
        func = site.node.func
        if isinstance(func, cst.Attribute) and func.attr.value in _RESHAPES:
            return True
    return False


class LayerShapeMismatch(StaticRule):
    """
    ## What it catches
    A layer whose input size does not fit what reaches it: `nn.Linear(1600, 128)` after
    convolutions that produce 9216 features, a `Conv2d` expecting 3 channels on MNIST, a
    `view(-1, N)` with the wrong N. Shapes are inferred through `nn.Sequential`, blocks built
    by a helper function of the file (`block(16, 32)`, its arguments put in), `torch.cat` and
    the `__init__` and `forward` of simple modules built from literals, for an input shape the
    file shows: an MNIST/CIFAR dataset, `torch.randn(1, 1, 28, 28)`, or a comment
    `# pitfall-guard: input-shape=1,28,28`.

    ## Why it matters
    The first forward pass fails with "mat1 and mat2 shapes cannot be multiplied", far from
    the layer to change; a wrong `view(-1, N)` can even run, silently mixing samples of the
    batch.

    ## Example
    ```python
    self.conv1 = nn.Conv2d(1, 32, 3)
    self.conv2 = nn.Conv2d(32, 64, 3)
    self.fc1 = nn.Linear(1600, 128)  # 28x28 input: 64 x 12 x 12 = 9216 after max_pool2d(2)
    ```

    ## Fix
    Use the size the message computes (`nn.Linear(9216, 128)`), or `nn.LazyLinear(128)` to
    let PyTorch infer it, and `torch.flatten(x, 1)` instead of `view(-1, N)`. When the layer
    gets the right number of values still shaped as an image, the message says so: add
    `nn.Flatten()` before it.
    """

    code = "PG401"
    name = "layer-shape-mismatch"
    summary = "a layer's input size does not match the shape that reaches it"
    hint = "set the layer's input size to the computed one (or use nn.LazyLinear)"

    VALID = (
        # features joined with torch.cat, sizes right
        """
import torch
from torch import nn
from torchvision import datasets
train_set = datasets.MNIST("data", train=True)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Linear(784, 64)
        self.extra = nn.Linear(784, 32)
        self.head = nn.Linear(96, 10)
    def forward(self, x):
        x = torch.flatten(x, 1)
        both = torch.cat([self.image(x), self.extra(x)], dim=1)
        return self.head(both)
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
""",
        # blocks built by a helper of the file, sizes right
        """
import torch
from torch import nn
from torchvision import datasets
train_set = datasets.MNIST("data", train=True)
def block(cin, cout, pool=2):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool))
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1 = block(1, 16)
        self.b2 = block(16, 32)
        self.fc = nn.Linear(32 * 7 * 7, 10)
    def forward(self, x):
        x = self.b2(self.b1(x))
        return self.fc(torch.flatten(x, 1))
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
""",
        # the loop flattens each batch before the model
        """
import torch
from torch import nn
import torchvision
train_data = torchvision.datasets.MNIST(root="data", train=True)
autoencoder = nn.Sequential(nn.Linear(28 * 28, 128), nn.Tanh(), nn.Linear(128, 28 * 28))
optimizer = torch.optim.Adam(autoencoder.parameters(), lr=5e-3)
for x, _ in loader:
    b_x = x.view(-1, 28 * 28)
    loss = nn.functional.mse_loss(autoencoder(b_x), b_x)
""",
        """
import torch
from torch import nn
import torch.nn.functional as F
from torchvision import datasets
train_set = datasets.MNIST("data", train=True)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)
    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)
""",
        """
import torch
from torch import nn
# pitfall-guard: input-shape=1,28,28
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
""",
        # an input this model is not fed with says nothing about it
        """
import torch
from torch import nn
x = torch.randn(8, 3, 32, 32)
text_model = nn.Sequential(nn.Linear(300, 10))
""",
    )
    INVALID = (
        # features joined with torch.cat: 64 + 32, not 64 + 64
        """
import torch
from torch import nn
from torchvision import datasets
train_set = datasets.MNIST("data", train=True)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Linear(784, 64)
        self.extra = nn.Linear(784, 32)
        self.head = nn.Linear(64 + 64, 10)  # expect: PG401
    def forward(self, x):
        x = torch.flatten(x, 1)
        both = torch.cat([self.image(x), self.extra(x)], dim=1)
        return self.head(both)
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
""",
        # blocks built by a helper of the file: 28 -> 14 -> 7, not 8
        """
import torch
from torch import nn
from torchvision import datasets
train_set = datasets.MNIST("data", train=True)
def block(cin, cout, pool=2):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool))
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1 = block(1, 16)
        self.b2 = block(16, 32)
        self.fc = nn.Linear(32 * 8 * 8, 10)  # expect: PG401
    def forward(self, x):
        x = self.b2(self.b1(x))
        return self.fc(torch.flatten(x, 1))
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
""",
        # the right number of features, not flattened: the fix is nn.Flatten()
        """
import torch
from torch import nn
import torchvision
train_set = torchvision.datasets.MNIST("data", train=True)
model = nn.Sequential(
    nn.Conv2d(1, 8, 3),
    nn.ReLU(),
    nn.Linear(8 * 26 * 26, 10),  # expect: PG401
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
""",
        """
import torch
from torch import nn
import torchvision
data = torchvision.datasets.MNIST(root="data", download=True)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 26 * 26, 10)  # expect: PG401
    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = x.view(x.size(0), -1)
        return self.fc(x)
""",
        """
import torch
from torch import nn
example = torch.randn(1, 1, 28, 28)
model = nn.Sequential(
    nn.Conv2d(1, 16, 5),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(16 * 28 * 28, 10),  # expect: PG401
)
""",
        # no input shape in sight: the layers still have to agree with each other
        """
from torch import nn
mlp = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(128, 10))  # expect: PG401
""",
        # the trained model's first layer does not fit MNIST
        """
import torch
from torch import nn
from torchvision import datasets
train_set = datasets.MNIST("data", train=True)
model = nn.Sequential(
    nn.Conv2d(3, 16, 3),  # expect: PG401
    nn.ReLU(),
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        found = input_shape(self.facts)
        shape, certain = found if found is not None else (UNKNOWN_INPUT, False)
        trained, trained_classes = self.facts.trained_models(), self.facts.trained_classes()
        for class_name, info in self.facts.classes.items():
            forward = forward_of(info.node)
            if forward is None or not self.facts.is_module_class(class_name):
                continue
            tracer = ShapeTracer(
                self.facts, shape, strict=certain and class_name in trained_classes
            )
            with self._reporting_mismatch():
                ForwardInterpreter(tracer, module_layers(info.node)).run(forward, shape)
        for name, kind in self.facts.bindings.items():
            constructor = self.facts.constructors.get(name)
            if kind is not Kind.MODEL or constructor is None or name.startswith("self."):
                continue
            if self.facts.qualified_name(constructor.func) == "torch.nn.Sequential":
                tracer = ShapeTracer(self.facts, shape, strict=certain and name in trained)
                with self._reporting_mismatch():
                    tracer.layer(constructor, shape, name)

    @contextlib.contextmanager
    def _reporting_mismatch(self) -> Iterator[None]:
        try:
            yield
        except Mismatch as mismatch:
            self.report(mismatch.node, str(mismatch), hint=mismatch.hint)
        except Unknown:
            pass


class SoftmaxBeforeCrossEntropy(StaticRule):
    """
    ## What it catches
    A model whose output goes through softmax (`nn.Softmax` as its last layer, also of an
    `nn.Sequential` head stored as an attribute or built by a helper function, or `F.softmax`
    in the `return` of `forward`, or softmax applied right before the loss) trained with
    `nn.CrossEntropyLoss` / `F.cross_entropy`.

    ## Why it matters
    CrossEntropyLoss applies log-softmax itself and expects raw logits. Softmax before it
    squashes the scores into [0, 1], so gradients vanish as soon as the model is confident:
    training is slow, stalls early and accuracy plateaus below what the model can reach.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(784, 10), nn.Softmax(dim=1))
    loss = nn.CrossEntropyLoss()(model(x), y)
    ```

    ## Fix
    Return logits from the model and apply softmax only where probabilities are needed
    (for display, after `argmax`, at inference).
    """

    code = "PG403"
    name = "softmax-before-cross-entropy"
    summary = "softmax output fed to CrossEntropyLoss, which expects logits"
    hint = "return raw logits; CrossEntropyLoss applies log-softmax itself"

    VALID = (
        # a head built by a helper that ends in a Linear layer
        """
import torch
from torch import nn
def make_head(n):
    return nn.Sequential(nn.Linear(n, 10))
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(784, 256)
        self.head = make_head(256)
    def forward(self, x):
        return self.head(self.body(x))
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
criterion = nn.CrossEntropyLoss()
loss = criterion(model(x), y)
""",
        # the probabilities are returned too, but the loss gets the logits
        """
import torch
from torch import nn
class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.probs = nn.Sequential(nn.Softmax(dim=1))
    def forward(self, x):
        logits = self.fc(x)
        return logits, self.probs(logits)
net = Classifier()
optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
criterion = nn.CrossEntropyLoss()
logits, probs = net(x)
loss = criterion(logits, y)
""",
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(784, 10))
loss = nn.CrossEntropyLoss()(model(x), y)
probabilities = torch.softmax(model(x), dim=1)
""",
        # a submodule returning attention weights is not the classifier's output
        """
import torch
from torch import nn
class AttentionPool(nn.Module):
    def forward(self, h):
        return torch.softmax(self.score(h), dim=1)
class Classifier(nn.Module):
    def forward(self, h):
        return self.head(self.pool(h))
model = Classifier()
optimizer = torch.optim.Adam(model.parameters())
loss = nn.functional.cross_entropy(model(h), y)
""",
        # softmax with NLLLoss is a different (also unusual) choice, not this pitfall
        """
import torch.nn.functional as F
loss = F.nll_loss(F.log_softmax(logits, dim=1), y)
""",
    )
    INVALID = (
        # a head built by a helper of the file, ending in nn.Softmax
        """
import torch
from torch import nn
def make_head(n):
    return nn.Sequential(nn.Linear(n, 10), nn.Softmax(dim=1))
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(784, 256)
        self.head = make_head(256)  # expect: PG403
    def forward(self, x):
        return self.head(self.body(x))
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
criterion = nn.CrossEntropyLoss()
loss = criterion(model(x), y)
""",
        """
import torch
from torch import nn
model = nn.Sequential(
    nn.Linear(784, 10),
    nn.Softmax(dim=1),  # expect: PG403
)
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for x, y in loader:
    loss = criterion(model(x), y)
""",
        """
import torch
from torch import nn
import torch.nn.functional as F
class Net(nn.Module):
    def forward(self, x):
        x = self.fc(x)
        return F.softmax(x, dim=1)  # expect: PG403
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
loss = F.cross_entropy(model(x), y)
""",
        """
import torch
from torch import nn
criterion = nn.CrossEntropyLoss()
probs = torch.softmax(model(x), dim=1)  # expect: PG403
loss = criterion(probs, y)
""",
        # the classifier's output head ends in Softmax
        """
import torch
from torch import nn
class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.output_layer = nn.Sequential(nn.Linear(8 * 30 * 30, 10), nn.Softmax())  # expect: PG403
    def forward(self, img):
        features = self.model(img).view(img.size(0), -1)
        label = self.output_layer(features)
        return label
classifier = Classifier()
optimizer = torch.optim.Adam(classifier.parameters(), lr=2e-4)
task_loss = nn.CrossEntropyLoss()
loss = task_loss(classifier(images), labels)
""",
        # the auxiliary classifier of a GAN's discriminator ends in Softmax
        """
import torch
from torch import nn
class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 128)
        self.adv_layer = nn.Sequential(nn.Linear(128, 1), nn.Sigmoid())
        self.aux_layer = nn.Sequential(nn.Linear(128, 10), nn.Softmax())  # expect: PG403
    def forward(self, img):
        out = self.body(img)
        validity = self.adv_layer(out)
        label = self.aux_layer(out)
        return validity, label
discriminator = Discriminator()
optimizer_D = torch.optim.Adam(discriminator.parameters(), lr=2e-4)
auxiliary_loss = nn.CrossEntropyLoss()
adversarial_loss = nn.BCELoss()
real_pred, real_aux = discriminator(real_imgs)
d_loss = adversarial_loss(real_pred, valid) + auxiliary_loss(real_aux, labels)
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        facts = self.facts
        if not any(is_cross_entropy(facts.qualified_name(s.node.func)) for s in facts.calls):
            return
        found: dict[cst.CSTNode, str] = {}
        # Only the models an optimizer trains feed the loss; a submodule that returns
        # softmax (attention weights, a policy) is not the classifier.
        trained, trained_classes = facts.trained_models(), facts.trained_classes()
        if not self._model_output_into_loss():
            trained, trained_classes = set(), set()
        for name, kind in facts.bindings.items():
            constructor = facts.constructors.get(name)
            if kind is not Kind.MODEL or constructor is None or name.startswith("self."):
                continue
            if name not in trained:
                continue
            last = _last_sequential_layer(facts, constructor)
            if last is not None and self._is_softmax_call(last):
                found[last] = f"the last layer of '{name}'"
        for class_name, info in facts.classes.items():
            if class_name not in trained_classes:
                continue
            returned = _returned_expression(info.node)
            layers = module_layers(info.node)
            if returned is not None and self._is_softmax_call(returned, layers):
                found[returned] = f"{class_name}.forward"
                continue
            # `label = self.output_layer(h); return label`, the layer ending in nn.Softmax
            ending = _softmax_layer(facts, _forward_output(info.node, None), layers)
            if ending is not None:
                found[ending] = f"{class_name}.forward"
        for node, where in self._softmax_outputs_into_loss().items():
            found.setdefault(node, where)
        for softmax in self._softmax_into_loss():
            found.setdefault(softmax, "the loss input")
        for node, where in found.items():
            self.report(
                node,
                f"softmax in {where} feeds cross-entropy, which applies log-softmax itself: "
                "gradients shrink as the model grows confident and training stalls",
            )

    def _is_softmax_call(
        self, node: cst.BaseExpression, layers: dict[str, cst.BaseExpression] | None = None
    ) -> bool:
        if not isinstance(node, cst.Call):
            return False
        if is_softmax(self.facts.qualified_name(node.func)):
            return True
        name = dotted_name(node.func) or ""
        if layers and name.startswith("self.") and name[5:] in layers:
            layer = layers[name[5:]]
            return isinstance(layer, cst.Call) and is_softmax(self.facts.qualified_name(layer.func))
        return (
            isinstance(node.func, cst.Attribute)
            and node.func.attr.value == "softmax"
            and not ((self.facts.qualified_name(node.func) or "").startswith("torch.nn.functional"))
            and name.split(".")[0] not in ("F", "torch")
        )

    def _cross_entropy_inputs(self) -> list[tuple[CallSite, list[cst.BaseExpression]]]:
        """Each cross-entropy call with what its input is: the expression, or its assignments."""
        facts = self.facts
        inputs = []
        for site in facts.calls:
            callee = dotted_name(site.node.func) or ""
            constructor = facts.constructors.get(callee)
            if not site.node.args or not (
                is_cross_entropy(facts.qualified_name(site.node.func))
                or (
                    constructor is not None
                    and is_cross_entropy(facts.qualified_name(constructor.func))
                )
            ):
                continue
            value = site.node.args[0].value
            name = dotted_name(value)
            values = facts.assignments_in(name, site.function) if name is not None else [value]
            inputs.append((site, values))
        return inputs

    def _softmax_into_loss(self) -> list[cst.CSTNode]:
        return [
            value
            for _, values in self._cross_entropy_inputs()
            if values and all(self._is_softmax_call(v) for v in values)
            for value in values
        ]

    def _softmax_outputs_into_loss(self) -> dict[cst.CSTNode, str]:
        """`real, aux = D(x)` then `cross_entropy(aux, y)`, where D.forward returns
        `(validity, self.aux_layer(h))` and `aux_layer = nn.Sequential(..., nn.Softmax())`."""
        facts = self.facts
        found: dict[cst.CSTNode, str] = {}
        for site, values in self._cross_entropy_inputs():
            name = dotted_name(site.node.args[0].value)
            for value in values:
                index = facts.unpacked.get((value, name or ""))
                if index is None or not isinstance(value, cst.Call):
                    continue
                info = facts.classes.get(self._class_of(value.func) or "")
                if info is None:
                    continue
                output = _forward_output(info.node, index)
                softmax = _softmax_layer(facts, output, module_layers(info.node))
                if softmax is not None:
                    found[softmax] = f"output {index} of {info.node.name.value}.forward"
        return found

    def _class_of(self, model: cst.BaseExpression) -> str | None:
        """The file's class a model name was built from (`D = Discriminator()`)."""
        name = dotted_name(model)
        constructor = self.facts.constructors.get(name or "")
        if constructor is None:
            return None
        qualified = self.facts.qualified_name(constructor.func)
        return qualified if qualified in self.facts.classes else None

    def _model_output_into_loss(self) -> bool:
        """Whether some cross-entropy input is a model's output (`loss_fn(model(x), y)`)."""
        return any(
            isinstance(base := strip_chain(value)[0], cst.Call)
            and self.facts.kind_of(base.func) is Kind.MODEL
            for _, values in self._cross_entropy_inputs()
            for value in values
        )


def _last_sequential_layer(facts: Facts, constructor: cst.Call) -> cst.BaseExpression | None:
    if facts.qualified_name(constructor.func) != "torch.nn.Sequential" or not constructor.args:
        return None
    return constructor.args[-1].value


def _forward_output(class_node: cst.ClassDef, index: int | None) -> cst.BaseExpression | None:
    """What `forward` returns (element `index` of a returned tuple), through a name it
    assigns there once."""
    returned = _returned_expression(class_node)
    if index is None:
        element = returned
    elif not isinstance(returned, cst.Tuple) or index >= len(returned.elements):
        return None
    else:
        element = returned.elements[index].value
    forward = forward_of(class_node)
    if isinstance(element, cst.Name) and forward is not None:
        assigned = [
            small.value
            for statement in forward.body.body
            if isinstance(statement, cst.SimpleStatementLine)
            for small in statement.body
            if isinstance(small, cst.Assign)
            and len(small.targets) == 1
            and dotted_name(small.targets[0].target) == element.value
        ]
        return assigned[-1] if len(assigned) == 1 else None
    return element


def _softmax_layer(
    facts: Facts, node: cst.BaseExpression | None, layers: dict[str, cst.BaseExpression]
) -> cst.BaseExpression | None:
    """The softmax that ends `self.head(x)` when `self.head` is, or ends in, nn.Softmax."""
    if not isinstance(node, cst.Call):
        return None
    name = dotted_name(node.func) or ""
    layer = layers.get(name[5:]) if name.startswith("self.") else None
    builder = None
    if isinstance(layer, cst.Call) and not (facts.qualified_name(layer.func) or "").startswith(
        "torch.nn."
    ):
        builder, layer = layer, builder_result(facts, layer)  # `self.head = make_head(256)`
    while isinstance(layer, cst.Call) and facts.qualified_name(layer.func) == "torch.nn.Sequential":
        layer = layer.args[-1].value if layer.args else None
    if isinstance(layer, cst.Call) and is_softmax(facts.qualified_name(layer.func)):
        return builder or layer  # a built layer has no place in the file: its builder's call
    return None


def _returned_expression(class_node: cst.ClassDef) -> cst.BaseExpression | None:
    forward = forward_of(class_node)
    if forward is None or not forward.body.body:
        return None
    last = forward.body.body[-1]
    if isinstance(last, cst.SimpleStatementLine) and isinstance(last.body[0], cst.Return):
        return last.body[0].value
    return None


STATIC_RULES: tuple[type[StaticRule], ...] = (
    LayerShapeMismatch,
    LossBroadcast,
    SoftmaxBeforeCrossEntropy,
)
