"""PG3xx in the code: model.eval(), torch.no_grad(), and model.train() afterwards."""

from __future__ import annotations

import libcst as cst

from pitfall_guard.findings import Severity
from pitfall_guard.static.facts import EventKind, Facts, Function, GradEvent, Kind
from pitfall_guard.static.rule import StaticRule

from .regions import eval_switch, evaluation_regions, has_mode_dependent_layers


class EvalWithoutEvalMode(StaticRule):
    """
    ## What it catches
    Evaluation code (a function named like `evaluate`/`validate`/`test`, or a loop over a
    validation or test loader, `valid_data`, `dataloader["val"]`, a torchtext `val_iter`)
    that runs the model without `model.eval()` first, when the file or the project shows that
    the model has Dropout or BatchNorm layers (recurrent layers count with `dropout` > 0).
    The model is followed to where it is built: a builder function (also one returning a
    tuple), the arguments `main()` passes, a Trainer's `self.model`, an entry of a dict or
    list of models (`nets["G"]`), a class of another file of the project. An `eval()` called
    only under an `if` the evaluation is outside of (`if verbose: model.eval()`), or in a
    periodic validation the last epoch skips, is said with its condition. A model whose
    layers nothing shows is left alone, and so is a shape smoke test
    (`net(torch.randn(1, 3, 32, 32))`).

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
        # a Trainer that switches its model; a model of a list switched by its index
        """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(784, 128), nn.Dropout(0.5), nn.Linear(128, 10))
    def forward(self, x):
        return self.fc(x)
class Trainer:
    def __init__(self, model, optimizer, device):
        self.model = model.to(device)
        self.optimizer = optimizer
    def validate(self, loader):
        self.model.eval()
        with torch.no_grad():
            return [self.model(x).argmax(1) for x, _ in loader]
def build():
    model = Net()
    return model, torch.optim.SGD(model.parameters(), lr=0.1)
model, optimizer = build()
trainer = Trainer(model, optimizer, "cuda")
models = [Net(), nn.Linear(784, 10)]
models[0].eval()
with torch.no_grad():
    for x, _ in test_loader:
        models[0](x)
""",
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
        # a model of a dict switched by its key; eval() in the same `if` as the evaluation
        """
import torch
from torch import nn
nets = {"G": nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)), "D": nn.Linear(8, 1)}
for epoch in range(10):
    if epoch % 5 == 0:
        nets["G"].eval()
        with torch.no_grad():
            for x, _ in val_loader:
                nets["G"](x)
""",
        # periodic validation in the epoch loop, run on the last epoch too, leaves the model
        # in eval mode afterwards
        """
import torch
from torch import nn
net = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
MAX_EPOCH = 10
for epoch in range(MAX_EPOCH):
    net.train()
    if (epoch + 1) % 2 == 0:
        net.eval()
with torch.no_grad():
    for x, _ in test_loader:
        net(x)
""",
        # eval() on both paths of an if
        """
import torch
from torch import nn
net = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
if verbose:
    print("evaluating")
    net.eval()
else:
    net.eval()
with torch.no_grad():
    for x, _ in test_loader:
        net(x)
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
        # a Trainer handed the model (made by a builder that returns a tuple); a list
        """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(784, 128), nn.Dropout(0.5), nn.Linear(128, 10))
    def forward(self, x):
        return self.fc(x)
class Trainer:
    def __init__(self, model, optimizer, device):
        self.model = model.to(device)
        self.optimizer = optimizer
    def validate(self, loader):
        with torch.no_grad():
            return [self.model(x).argmax(1) for x, _ in loader]  # expect: PG301
def build():
    model = Net()
    return model, torch.optim.SGD(model.parameters(), lr=0.1)
model, optimizer = build()
trainer = Trainer(model, optimizer, "cuda")
models = [Net(), nn.Linear(784, 10)]
with torch.no_grad():
    for x, _ in test_loader:
        models[0](x)  # expect: PG301
""",
        # a model of a dict of models
        """
import torch
from torch import nn
nets = {"G": nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)), "D": nn.Linear(8, 1)}
with torch.no_grad():
    for x, _ in val_loader:
        nets["G"](x)  # expect: PG301
""",
        # eval() only in one branch
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
for epoch in range(10):
    model.train()
    train_one_epoch(model)
    if verbose:
        model.eval()
    with torch.no_grad():
        for x, _ in test_loader:
            model(x)  # expect: PG301
""",
        # the last epoch skips the periodic validation: the model is back in training mode
        """
import torch
from torch import nn
net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
max_epoch, val_interval = 10, 3
for epoch in range(max_epoch):
    net.train()
    train_one_epoch(net)
    if (epoch + 1) % val_interval == 0:
        net.eval()
        validate(net)
with torch.no_grad():
    for images, _ in valid_loader:
        net(images)  # expect: PG301
""",
        # a @no_grad evaluation function; the legacy torchtext iterators
        """
import torch
from torch import nn
from torchtext import data
model = nn.Sequential(nn.Embedding(100, 16), nn.Dropout(0.5), nn.Linear(16, 2))
train_iter, val_iter = data.BucketIterator.splits((train, val), batch_sizes=(32, 32))
@torch.no_grad()
def evaluate(model, iterator):
    return [model(batch.text) for batch in iterator]  # expect: PG301
for batch in val_iter:
    with torch.inference_mode():
        model(batch.text)  # expect: PG301
""",
        # a Keras-style evaluate() on the module itself
        """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(784, 128), nn.Dropout(0.5), nn.Linear(128, 10))
    def forward(self, x):
        return self.fc(x)
    def evaluate(self, loader):
        with torch.no_grad():
            return [self(x).argmax(1) for x, _ in loader]  # expect: PG301
    def evaluate_properly(self, loader):
        self.eval()
        with torch.no_grad():
            return [self(x).argmax(1) for x, _ in loader]
    def predict(self, x):
        return self(x).argmax(1)
""",
        # the decoder has Dropout, the encoder runs first
        """
import torch
from torch import nn
class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(16, 32)
class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.1)
        self.out = nn.Linear(32, 16)
encoder, decoder = Encoder(), Decoder()
def evaluate(sentence):
    hidden = encoder(sentence)
    return decoder(hidden)  # expect: PG301
""",
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
            if region.after_training:
                continue
            switch = eval_switch(self.facts, region)
            if switch.found:
                continue
            # eval() changes nothing without Dropout/BatchNorm; an unseen model may have none.
            # Of the models the region runs (an encoder, a decoder), the first that has them.
            shown = (
                (model, site)
                for model, site in region.forwards
                if has_mode_dependent_layers(self.facts, model, site.function)
            )
            model, site = next(shown, ("", None))
            if site is None:
                continue
            if switch.only_if is not None:
                condition = cst.Module([]).code_for_node(switch.only_if.test)
                self.report(
                    site.node,
                    f"{region.description} can run '{model}' in training mode: eval() is only "
                    f"called under `if {condition}:`, and when that is false Dropout and "
                    "BatchNorm still behave as in training, so the results are off",
                    hint=f"call {model}.eval() right before evaluating, outside the `if`",
                )
                continue
            self.report(
                site.node,
                f"{region.description} runs '{model}' without {model}.eval(): Dropout and "
                "BatchNorm still behave as in training, so the results are off",
                hint=f"call {model}.eval() before evaluating",
            )


class EvalWithGrad(StaticRule):
    """
    ## What it catches
    Evaluation code (a function named like `evaluate`/`validate`/`test`, a loop over a
    validation or test loader, the prediction a script makes with its trained model after
    the training loop, a forward on `test_x` in an `if` of the training loop that trains
    nothing, or an inference script: `model.eval()` then forwards, in a file that never
    trains nor asks for gradients) whose forward passes run with gradients enabled: no
    `torch.no_grad()`, `torch.inference_mode()` or decorator. A shape smoke test (one
    forward on `torch.randn(...)`) is not an evaluation, a forward followed by more training
    is part of the training, and tests and attribution code (captum) are left alone.

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
        # a saliency map asks for gradients on purpose; a test forward that trains
        """
import torch
model = torch.load("classifier.pt")
model.eval()
image = load_image().requires_grad_()
model(image)[0, 3].backward()
""",
        """
import torch
model = torch.nn.Linear(8, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
    if step % 50 == 0:
        with torch.no_grad():
            test_output = model(test_x)
    if step % 100 == 0:
        loss_fn(model(test_x), test_y).backward()  # test-time adaptation, say
""",
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
        # after training: under no_grad, or followed by more training
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(10):
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
with torch.no_grad():
    predict = model(test_x).argmax(1)
features = model(x)
loss_fn(features, y).backward()
optimizer.step()
""",
    )
    INVALID = (
        # the test accuracy printed every 50 steps of training
        """
import torch
model = torch.nn.Linear(8, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
    if step % 50 == 0:
        test_output = model(test_x)  # expect: PG302
""",
        # an inference script; a held-out set handed in under its name
        """
import torch
net = torch.load("classifier.pt")
net.eval()
for path in images:
    print(net(read(path)).argmax())  # expect: PG302
def fit(net, train_data, valid_data):
    for x, y in valid_data:
        net(x)  # expect: PG302
""",
        # the prediction after training, from a made-up hidden state and real inputs
        """
import torch
model = torch.nn.RNN(4, 8)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(100):
    optimizer.zero_grad()
    hidden = torch.zeros(1, 3, 8)
    output, _ = model(input_batch, hidden)
    loss_fn(output, target_batch).backward()
    optimizer.step()
hidden = torch.zeros(1, 3, 8)
predict = model(input_batch, hidden)  # expect: PG302
""",
        # after training, a loop over the validation loader is one evaluation: said once
        """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in train_loader:
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
for x, y in valid_loader:
    preds = model(x)  # expect: PG302
""",
        # the prediction a script makes once training is done
        """
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(100):
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
predict = model(inputs).data.max(1, keepdim=True)[1]  # expect: PG302
print(predict.squeeze())
""",
        """
import torch
def predict(model, x_val):
    model.eval()
    return model.forward(x_val).data.numpy().argmax(axis=1)  # expect: PG302
""",
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
        """
import torch
model.eval()
for inputs, labels in dataloader["val"]:
    outputs = model(inputs)  # expect: PG302
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
    calls) and keeps training without ever calling `model.train()` again, for a model the
    file shows to have Dropout or BatchNorm (otherwise the mode changes nothing).

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
from torch import nn
model = nn.Sequential(nn.Linear(10, 10), nn.BatchNorm1d(10))
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
        # no Dropout or BatchNorm: eval mode trains the same
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(3):
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    model.eval()
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
from torch import nn
model = nn.Sequential(nn.Linear(10, 10), nn.Dropout(0.5))
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
                # Without Dropout/BatchNorm, training in eval mode changes nothing.
                written_in = _function_of(self.facts, event)
                if not has_mode_dependent_layers(self.facts, event.target or "", written_in):
                    continue
                reported.add(event.node)
                self.report(
                    event.node,
                    f"'{event.target}' is switched to eval mode inside the training loop at line "
                    f"{self.context.line_of(loop.node)} and never back to train mode, so the rest "
                    "of training runs with Dropout off and BatchNorm frozen",
                )


def _function_of(facts: Facts, event: GradEvent) -> Function | None:
    """The function the event's `model.eval()` is written in (the loop's, or a callee's)."""
    return next((f for f in facts.all_functions if event in f.events), None)


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
