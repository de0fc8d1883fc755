"""PG3xx at runtime: forward passes that no backward pass uses (evaluation), and their modes.

No torch import at module level: the plugin manager imports this module for `check` too.

A forward pass is an evaluation when no backward pass ever reaches its output: either it
built no graph (under `no_grad`/`inference_mode`), or its graph was freed unused. A hook on
the outputs tells the first; the hook object's `__del__`, run when autograd frees the graph
that holds it, tells the second, without reading anything from the device. A run that never
back-propagates at all (a demo printing output shapes, an export) is not training, so its
unused graphs are not reported.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from pitfall_guard.runtime.attribution import Site, site_of, user_frame
from pitfall_guard.runtime.describe import describe_layer, module_path, tensors_in
from pitfall_guard.runtime.hooks import optimizer_params
from pitfall_guard.runtime.monitor import RuntimeListener, RuntimeMonitor

if TYPE_CHECKING:
    import torch
    from torch.utils.hooks import RemovableHandle

    from pitfall_guard.runtime.guard import Guard


@functools.cache
def mode_layer_types() -> tuple[type[torch.nn.Module], ...]:
    """Layers that behave differently in training and evaluation mode."""
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.dropout import _DropoutNd

    return (_DropoutNd, _BatchNorm)


_has_mode_layers: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def has_mode_layers(model: torch.nn.Module) -> bool:
    known = _has_mode_layers.get(model)
    if known is None:
        types = mode_layer_types()
        known = _has_mode_layers[model] = any(isinstance(m, types) for m in model.modules())
    return known


def _in_module_init(frame: FrameType) -> bool:
    """A forward pass run while a module is built (say, to measure a layer's output size)."""
    import torch

    return frame.f_code.co_name == "__init__" and isinstance(
        frame.f_locals.get("self"), torch.nn.Module
    )


# Frames of the module-call machinery, between a hook and the code that called the model.
_CALL_MACHINERY = ("torch.nn.modules.module", "torch.utils.hooks", "torch.utils._contextlib")


def _driven_by_torch(user: FrameType) -> bool:
    """Whether a torch function (not the module-call machinery) called the model for the
    user's frame `user`."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame is not user:
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith("torch.") and not module.startswith(_CALL_MACHINERY):
            return True
        frame = frame.f_back
    return False


@dataclass(frozen=True)
class Evaluation:
    """A forward pass that no backward pass used."""

    model: str
    site: Site
    built_graph: bool
    training_layer: str | None  # a Dropout/BatchNorm that ran in training mode, described


class _GraphWatch:
    """Hooked on the outputs of one forward pass: called when a backward pass reaches them;
    deleted when autograd frees their graph."""

    __slots__ = ("__weakref__", "backpropagated", "evaluation", "handles", "tracker")

    def __init__(self, tracker: EvaluationForwards, evaluation: Evaluation) -> None:
        self.tracker = tracker
        self.evaluation = evaluation
        self.backpropagated = False
        self.handles: list[RemovableHandle] = []

    def __call__(self, grad: torch.Tensor) -> None:
        if not self.backpropagated:
            self.backpropagated = True
            self.tracker.training_seen()

    def __del__(self) -> None:
        if not self.backpropagated:
            self.tracker.publish(self.evaluation)


class EvaluationForwards(RuntimeListener):
    """Finds the model's forward passes that no backward pass uses, for the PG3xx monitors."""

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        import torch

        self._tracing = torch._C._get_tracing_state
        self._subscribers: list[Callable[[Evaluation, int], None]] = []
        self._watches: weakref.WeakSet[_GraphWatch] = weakref.WeakSet()
        self._training_layer: torch.nn.Module | None = None
        self._trained = False
        self._unused_before_training: Counter[Evaluation] = Counter()
        # Forwards under no_grad since the last backward pass, by model.
        self._pending: dict[int, Counter[Evaluation]] = {}
        self._open = True

    def subscribe(self, callback: Callable[[Evaluation, int], None]) -> None:
        """`callback(evaluation, count)` is called for each evaluation (count times the same)."""
        self._subscribers.append(callback)

    def training_seen(self) -> None:
        self._pending.clear()  # those forwards fed training, they were not evaluations
        if not self._trained:
            self._trained = True
            waiting, self._unused_before_training = self._unused_before_training, Counter()
            for evaluation, count in waiting.items():
                self.publish(evaluation, count)

    def publish(self, evaluation: Evaluation, count: int = 1) -> None:
        if not self._open:
            return
        if evaluation.built_graph and not self._trained:
            self._unused_before_training[evaluation] += count
            return
        for callback in self._subscribers:
            with contextlib.suppress(Exception):  # called from __del__: nowhere to raise to
                callback(evaluation, count)

    def on_model_call(self, model: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self._training_layer = None

    def on_module_call(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        training = module.training and self._training_layer is None
        if training and isinstance(module, mode_layer_types()):
            self._training_layer = module

    def on_model_return(self, model: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if next(model.parameters(), None) is None:
            return  # a parameterless module (Softmax, Flatten) is not a model
        frame = user_frame()
        if frame is None or _in_module_init(frame) or self._tracing() is not None:
            return  # building a model, or torch.jit.trace running it: not an evaluation
        if _driven_by_torch(frame):
            return  # torch itself runs it, as swa_utils.update_bn() recomputing BN statistics
        layer = self._training_layer
        described = (
            None if layer is None else (f"{module_path(layer, model)} ({describe_layer(layer)})")
        )
        graph = [tensor for tensor in tensors_in(output) if tensor.grad_fn is not None]
        evaluation = Evaluation(type(model).__name__, site_of(frame), bool(graph), described)
        if not graph:
            self._gradient_free(id(model), evaluation)
            return
        watch = _GraphWatch(self, evaluation)
        watch.handles = [tensor.register_hook(watch) for tensor in graph]
        self._watches.add(watch)

    def _gradient_free(self, model: int, evaluation: Evaluation) -> None:
        """A forward under no_grad: an evaluation if more of them follow before the next
        backward pass (or the run ends); one between two training steps computes a target or
        an input for training instead (a GAN's fakes, a teacher's or momentum encoder's
        outputs, pseudo-labels, a shape probe)."""
        pending = self._pending.setdefault(model, Counter())
        pending[evaluation] += 1
        if sum(pending.values()) >= 2:
            for waiting, count in pending.items():
                self.publish(waiting, count)
            pending.clear()

    def finish(self, completed: bool) -> None:
        # Graphs still alive at the end were never back-propagated either; after a crash or a
        # --max-steps stop, a backward pass may simply not have had its turn.
        if completed:
            for pending in self._pending.values():
                for evaluation, count in pending.items():
                    self.publish(evaluation, count)
        self._pending.clear()
        for watch in list(self._watches):
            if completed and not watch.backpropagated:
                self.publish(watch.evaluation)
            watch.backpropagated = True
            for handle in watch.handles:
                handle.remove()
        self._open = False


class EvaluationInTrainModeMonitor(RuntimeMonitor):
    """
    ## What it catches
    A forward pass that no backward pass uses (an evaluation) while the model's Dropout or
    BatchNorm layers are in training mode: `model.eval()` was not called.

    ## Why it matters
    Dropout keeps dropping activations, so the metrics are noisy and too low; BatchNorm
    normalizes with the batch's statistics and overwrites its running statistics with the
    evaluation data. The numbers look plausible, and are wrong.

    ## Example
    ```python
    with torch.no_grad():
        for images, labels in test_loader:
            correct += (model(images).argmax(1) == labels).sum()
    ```

    ## Fix
    Call `model.eval()` before evaluating, and `model.train()` before training again.
    """

    code = "PG301"
    name = "evaluation-in-train-mode"
    summary = "an evaluation forward pass runs with Dropout/BatchNorm in training mode"
    hint = "call model.eval() before evaluating (and model.train() before training again)"

    VALID = (
        """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1))
        with torch.no_grad():  # measuring a size while building the model
            width = self.features(torch.zeros(1, 4)).shape[1]
        self.head = nn.Linear(width, 1)
    def forward(self, x):
        return self.head(self.features(x))
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(2):
    optimizer.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
model.eval()
with torch.no_grad():
    model(torch.randn(8, 4))
model.train()
""",
    )
    INVALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
with torch.no_grad():
    predictions = model(torch.randn(3, 4))  # expect: PG301
""",
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(2):
    optimizer.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    predictions = model(torch.randn(3, 4))  # expect: PG301, PG302
""",
    )

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        guard.service(EvaluationForwards).subscribe(self._evaluated)

    def _evaluated(self, evaluation: Evaluation, count: int) -> None:
        if evaluation.training_layer is not None:
            self.report(
                f"{evaluation.model} ran a forward pass that no backward pass used (an "
                f"evaluation) while {evaluation.training_layer} is in training mode",
                site=evaluation.site,
                count=count,
            )


class EvaluationWithGradMonitor(RuntimeMonitor):
    """
    ## What it catches
    A forward pass with gradients enabled whose graph no backward pass uses: an evaluation
    without `torch.no_grad()` or `torch.inference_mode()`.

    ## Why it matters
    Autograd keeps every activation of the forward pass until the outputs are freed: memory
    grows with the batch and the evaluation is slower, for a graph that is thrown away.
    Accumulating such outputs (`total += loss`) keeps whole graphs alive.

    ## Example
    ```python
    model.eval()
    for images, labels in test_loader:
        correct += (model(images).argmax(1) == labels).sum()
    ```

    ## Fix
    Evaluate under `with torch.no_grad():` (or `torch.inference_mode()`).
    """

    code = "PG302"
    name = "evaluation-with-grad"
    summary = "an evaluation forward pass builds a graph that no backward pass uses"
    hint = "evaluate under `with torch.no_grad():` (or torch.inference_mode())"

    VALID = (
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
model.eval()
with torch.inference_mode():
    for _ in range(2):
        model(torch.randn(3, 4))
""",
        # a run that never trains (a demo printing shapes, torch.jit.trace) is not evaluating
        """
import torch
from torch import nn
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
print(model(torch.randn(2, 1, 8, 8)).shape)
traced = torch.jit.trace(model, torch.randn(1, 1, 8, 8))
""",
    )
    INVALID = (
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(2):
    model.eval()
    predictions = model(torch.randn(3, 4))  # expect: PG302
    model.train()
    optimizer.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
""",
    )

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        guard.service(EvaluationForwards).subscribe(self._evaluated)

    def _evaluated(self, evaluation: Evaluation, count: int) -> None:
        if evaluation.built_graph:
            self.report(
                f"{evaluation.model} ran a forward pass with gradients enabled whose graph no "
                "backward pass used: autograd kept its activations for nothing",
                site=evaluation.site,
                count=count,
            )


class TrainModeNotRestoredMonitor(RuntimeMonitor):
    """
    ## What it catches
    An optimizer step that trains a model while the model is in evaluation mode (and has
    Dropout or BatchNorm layers): `model.train()` was not called after an evaluation.

    ## Why it matters
    From then on, Dropout is off and BatchNorm uses frozen running statistics: the model trains
    without its regularization and normalization, typically overfitting or training worse
    after the first evaluation, with no error.

    ## Example
    ```python
    for epoch in range(epochs):
        train_one_epoch(model, loader)   # no model.train() inside
        evaluate(model, test_loader)     # calls model.eval()
    ```

    ## Fix
    Call `model.train()` at the start of each training epoch (after every evaluation).
    Freezing only the BatchNorm layers (`bn.eval()` in a model in training mode) is fine.
    """

    code = "PG303"
    name = "train-mode-not-restored"
    summary = "an optimizer step trains a model that is in evaluation mode"
    hint = "call model.train() at the start of each training epoch, after evaluating"

    VALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in range(2):
    model.train()
    model[1].eval()  # frozen BatchNorm: deliberate
    optimizer.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        model(torch.randn(8, 4))
""",
    )
    INVALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
model.eval()
with torch.no_grad():
    model(torch.randn(3, 4))
for _ in range(2):
    optimizer.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()  # expect: PG303
""",
    )

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        import torch

        self._grad_enabled = torch.is_grad_enabled
        self._models: dict[int, torch.nn.Module] = {}  # called with grad since the last step
        # (optimizer, model): the parameters the optimizer updates in the model
        self._trains: dict[tuple[int, int], list[torch.Tensor]] = {}

    def on_model_call(self, model: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self._grad_enabled():
            self._models[id(model)] = model

    def on_step(self, optimizer: torch.optim.Optimizer) -> None:
        for model in self._models.values():
            if not model.training and has_mode_layers(model) and self._steps(optimizer, model):
                self.report(
                    f"{type(optimizer).__name__}.step() trains {type(model).__name__} while "
                    "it is in evaluation mode: its Dropout/BatchNorm layers act as in evaluation"
                )

    def on_step_done(self, optimizer: torch.optim.Optimizer) -> None:
        self._models.clear()

    def _steps(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> bool:
        """Whether the step updates the model: a parameter of both that is not frozen (a
        frozen backbone in eval mode may sit in the optimizer's parameter list)."""
        key = (id(optimizer), id(model))
        shared = self._trains.get(key)
        if shared is None:
            stepped = {id(param) for param in optimizer_params(optimizer)}
            shared = self._trains[key] = [p for p in model.parameters() if id(p) in stepped]
        return any(param.requires_grad for param in shared)


RUNTIME_MONITORS: tuple[type[RuntimeMonitor], ...] = (
    EvaluationInTrainModeMonitor,
    EvaluationWithGradMonitor,
    TrainModeNotRestoredMonitor,
)
