"""PG4xx at runtime: shape errors explained, losses fed shapes that broadcast or probabilities.

(A section of the shapes family: the lead folds it into rules/shapes.py.) No torch import at
module level: the plugin manager imports this module for `check` too.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from pitfall_guard.runtime.attribution import error_site
from pitfall_guard.runtime.describe import describe_layer, module_path, shape_text, tensors_in
from pitfall_guard.runtime.monitor import RuntimeMonitor

if TYPE_CHECKING:
    import torch

    from pitfall_guard.runtime.guard import Guard

# The words of PyTorch's shape errors ("mat1 and mat2 shapes cannot be multiplied", "expected
# input[...] to have 1 channels", "The size of tensor a ... must match", "shape '[..]' is
# invalid for input of size").
_SHAPE_ERROR = re.compile(r"shape|size|dimension|channels|mat1|mat2", re.IGNORECASE)
_TRAIL_SHOWN = 6  # layers shown before the failing one
_TRAIL_KEPT = 64


class LayerShapeMismatchMonitor(RuntimeMonitor):
    """
    ## What it catches
    A forward pass that fails with a shape error. The error is raised again with the module
    path, the layer (`Linear(in_features=9216, ...)`), the input shape it got and the shapes
    through the previous layers.

    ## Why it matters
    PyTorch's message (`mat1 and mat2 shapes cannot be multiplied (64x12544 and 9216x128)`)
    names neither the layer nor the layers that produced the shape; finding the layer built
    with the wrong size means printing shapes by hand.

    ## Example
    ```python
    self.conv2 = nn.Conv2d(32, 64, 3)
    self.fc1 = nn.Linear(9216, 128)   # but the input is 28x28 and there is no pooling
    ```

    ## Fix
    Make the layer's size match the shape it gets (the report shows it), or compute it: build
    the layer with `nn.LazyLinear(128)`, or run a dummy input through the layers before it.
    """

    code = "PG401"
    name = "layer-shape-mismatch"
    summary = "a forward pass fails on a shape; the layer and the shapes so far are named"
    hint = "make the layer's input size match the shape it gets, or use nn.LazyLinear"

    VALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10))
model(torch.randn(2, 1, 8, 8)).sum().backward()
""",
    )
    INVALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(100, 10))
model(torch.randn(2, 1, 8, 8))  # expect: PG401
# raises: RuntimeError
""",
    )

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        self._model: torch.nn.Module | None = None
        self._trail: list[tuple[torch.nn.Module, str | tuple[int, ...]]] = []

    def on_model_call(self, model: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self._model = model
        self._trail = [(model, shape_text(args[0]) if len(args) == 1 else shape_text(args))]

    def on_module_return(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        # Leaf layers only, and only the shape (keeping outputs would keep memory alive).
        shape = getattr(output, "shape", None)
        if shape is not None and not module._modules and self.guard.model is not None:
            self._trail.append((module, shape))
            if len(self._trail) > _TRAIL_KEPT:
                del self._trail[1 : _TRAIL_KEPT // 2]

    def on_module_error(
        self, module: torch.nn.Module, args: tuple[Any, ...], error: BaseException
    ) -> None:
        if not isinstance(error, (RuntimeError, ValueError)) or not _SHAPE_ERROR.search(str(error)):
            return
        model = self._model
        where = module_path(module, model)
        got = shape_text(args[0]) if len(args) == 1 else shape_text(args)
        steps = [
            f"{'input' if i == 0 else module_path(layer, model)} {shape_text_of(shape)}"
            for i, (layer, shape) in enumerate(self._trail)
        ]
        if len(steps) > _TRAIL_SHOWN + 1:
            steps = [steps[0], "...", *steps[-_TRAIL_SHOWN:]]
        message = str(error).strip()
        first_line = message.splitlines()[0] if message else type(error).__name__
        text = (
            f"{where} ({describe_layer(module)}) got an input of shape {got}: {first_line}; "
            f"shapes through the previous layers: {' -> '.join(steps)}"
        )
        self.report(text, site=error_site(error))
        self.guard.explain(error, f"{self.code} {text}")


def shape_text_of(shape: str | tuple[int, ...]) -> str:
    return shape if isinstance(shape, str) else "(" + ", ".join(str(s) for s in shape) + ")"


@functools.cache
def _broadcasting_losses() -> tuple[type[torch.nn.Module], ...]:
    """Losses that compare input and target element by element, broadcasting with a warning."""
    from torch import nn

    return (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)


@functools.cache
def _cross_entropy() -> type[torch.nn.Module]:
    from torch import nn

    return nn.CrossEntropyLoss


class LossBroadcastMonitor(RuntimeMonitor):
    """
    ## What it catches
    An element-wise loss (`MSELoss`, `L1Loss`, `SmoothL1Loss`, `HuberLoss`) whose input and
    target have different shapes that broadcast, typically a model output of shape `(N, 1)`
    and a target of shape `(N,)`.

    ## Why it matters
    Broadcasting turns `(N, 1)` against `(N,)` into an `(N, N)` comparison: every prediction
    is compared with every target, the loss is the distance to the batch mean, and the model
    learns to predict the mean. PyTorch only prints a warning, once.

    ## Example
    ```python
    loss = nn.MSELoss()(model(x), y)   # model(x): (64, 1), y: (64,)
    ```

    ## Fix
    Give both the same shape: `loss_fn(model(x).squeeze(1), y)` or `loss_fn(model(x),
    y.unsqueeze(1))`.
    """

    code = "PG402"
    name = "loss-broadcast"
    summary = "a loss's input and target have different shapes that broadcast"
    hint = "give input and target the same shape: output.squeeze(1) or target.unsqueeze(1)"

    VALID = (
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
nn.MSELoss()(model(torch.randn(8, 4)).squeeze(1), torch.randn(8)).backward()
""",
        # a constant target, as in a GAN's "real" label
        """
import warnings
import torch
from torch import nn
warnings.simplefilter("ignore")  # PyTorch warns about any size difference, even this one
discriminator = nn.Linear(4, 1)
nn.MSELoss()(discriminator(torch.randn(8, 4)), torch.tensor(1.0)).backward()
""",
    )
    INVALID = (
        """
import warnings
import torch
from torch import nn
warnings.simplefilter("ignore")
model = nn.Linear(4, 1)
nn.MSELoss()(model(torch.randn(8, 4)), torch.randn(8)).backward()  # expect: PG402
""",
        # the functional API, as Lightning and timm write it
        """
import warnings
import torch
import torch.nn.functional as F
warnings.simplefilter("ignore")
model = torch.nn.Linear(4, 1)
F.mse_loss(model(torch.randn(8, 4)), torch.randn(8)).backward()  # expect: PG402
F.l1_loss(input=model(torch.randn(8, 4)), target=torch.randn(8)).backward()  # expect: PG402
""",
    )

    def on_loss_call(self, loss: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if not isinstance(loss, _broadcasting_losses()):
            return
        tensors = list(tensors_in(args[:2], depth=1))
        if len(tensors) != 2 or tensors[0].shape == tensors[1].shape:
            return
        import torch

        try:
            shape = torch.broadcast_shapes(tensors[0].shape, tensors[1].shape)
        except RuntimeError:
            return  # PyTorch raises its own error for shapes that do not broadcast
        if shape == tensors[0].shape:
            return  # a target spread over the input (`torch.tensor(1.0)`) is deliberate
        self.report(
            f"{type(loss).__name__} compares an input of shape {shape_text(tensors[0])} with a "
            f"target of shape {shape_text(tensors[1])}: they broadcast to "
            f"{shape_text_of(tuple(shape))}, so the loss compares the wrong elements"
        )


class SoftmaxBeforeCrossEntropyMonitor(RuntimeMonitor):
    """
    ## What it catches
    `nn.CrossEntropyLoss` called on the output of a softmax (seen in the input's `grad_fn`).

    ## Why it matters
    `CrossEntropyLoss` applies log-softmax itself and expects logits. Given probabilities, it
    computes the softmax of a softmax: the loss cannot go below a floor, its gradients are
    tiny, and training stalls or converges to a worse model.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(784, 10), nn.Softmax(dim=1))
    loss = nn.CrossEntropyLoss()(model(images), labels)
    ```

    ## Fix
    Return logits from the model and apply softmax only for predictions (or use
    `nn.LogSoftmax` with `nn.NLLLoss`).
    """

    code = "PG403"
    name = "softmax-before-cross-entropy"
    summary = "CrossEntropyLoss gets probabilities from a softmax instead of logits"
    hint = "return logits from the model; CrossEntropyLoss applies log-softmax itself"

    VALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1))
nn.NLLLoss()(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
nn.CrossEntropyLoss()(model[0](torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
""",
    )
    INVALID = (
        """
import torch
import torch.nn.functional as F
model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()  # expect: PG403
""",
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
loss_fn = nn.CrossEntropyLoss()
loss_fn(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()  # expect: PG403
""",
    )

    def on_loss_call(self, loss: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if not isinstance(loss, _cross_entropy()) or not args:
            return
        node = getattr(args[0], "grad_fn", None)
        # Look through casts, views and copies (autocast inserts them) for a softmax.
        for _ in range(4):
            if node is None:
                return
            kind = type(node).__name__
            if kind.startswith("SoftmaxBackward"):
                name = type(loss).__name__
                self.report(
                    f"{name} gets the output of a softmax: it applies log-softmax itself, so it "
                    "trains on a softmax of probabilities, with vanishing gradients"
                )
                return
            if not kind.startswith(("ToCopyBackward", "ViewBackward", "CloneBackward")):
                return
            node = node.next_functions[0][0] if node.next_functions else None


RUNTIME_MONITORS: tuple[type[RuntimeMonitor], ...] = (
    LayerShapeMismatchMonitor,
    LossBroadcastMonitor,
    SoftmaxBeforeCrossEntropyMonitor,
)
