"""PG2xx at runtime: tensors that reach a module on another device than its parameters.

No torch import at module level: the plugin manager imports this module for `check` too.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from pitfall_guard.runtime.describe import describe_layer, first_parameter, module_path, tensors_in
from pitfall_guard.runtime.monitor import RuntimeMonitor

if TYPE_CHECKING:
    import torch

    from pitfall_guard.runtime.guard import Guard


def _off_device(args: tuple[Any, ...], device: torch.device) -> torch.device | None:
    """The device of the first tensor argument that is not on `device` (a CPU scalar tensor
    is allowed anywhere, as PyTorch allows it)."""
    for tensor in tensors_in(args):
        if tensor.device != device and not (tensor.device.type == "cpu" and tensor.dim() == 0):
            return tensor.device
    return None


class DeviceMismatchMonitor(RuntimeMonitor):
    """
    ## What it catches
    A module that receives an input on another device than its parameters: the batch was not
    moved to the model's device (or the model was not moved), or `forward()` creates a tensor
    without a `device=`. Also a loss whose input and target are on different devices.

    ## Why it matters
    PyTorch stops with "Expected all tensors to be on the same device", which names neither
    the module nor your line; some device pairs (meta, some CPU kernels) compute garbage
    without an error. The report names the module, both devices and the line, and is made
    before PyTorch's own error.

    ## Example
    ```python
    model = MnistCnn().to("cuda")
    for images, labels in loader:
        loss = loss_fn(model(images), labels)   # images are still on the CPU
    ```

    ## Fix
    Move each batch where the model is (`images = images.to(device)`), and create tensors
    inside `forward()` on the input's device (`torch.zeros(n, device=x.device)`).
    """

    code = "PG201"
    name = "device-mismatch"
    summary = "a module gets an input on another device than its parameters"
    hint = "move the batch to the model's device: images = images.to(device)"

    VALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
loss_fn = nn.CrossEntropyLoss()
inputs, targets = torch.randn(4, 4), torch.tensor([0, 1, 1, 0])
(loss_fn(model(inputs), targets) * torch.tensor(0.5)).backward()
""",
    )
    INVALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)).to("meta")
model(torch.randn(2, 4))  # expect: PG201
# raises: RuntimeError
""",
        # a tensor created inside forward() without a device
        """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)
    def forward(self, x):
        return self.fc(torch.ones(x.shape, device="meta"))  # expect: PG201
Net()(torch.randn(2, 4))
# raises: RuntimeError
""",
        """
import torch
from torch import nn
nn.MSELoss()(torch.randn(3), torch.randn(3, device="meta"))  # expect: PG201
# raises: RuntimeError
""",
    )

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        self._model_params: weakref.WeakKeyDictionary[torch.nn.Module, torch.Tensor | None] = (
            weakref.WeakKeyDictionary()
        )
        self._explanation: str | None = None  # of this forward pass, for PyTorch's error

    def on_model_call(self, model: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self._explanation = None
        if model not in self._model_params:
            self._model_params[model] = first_parameter(model)
        param = self._model_params[model]
        if param is None:
            return
        device = _off_device(args, param.device)
        # A model spread over several devices may take its input on any of them.
        if device is not None and device not in {p.device for p in model.parameters()}:
            self._explanation = (
                f"{type(model).__name__} got its input on {device}, "
                f"but its parameters are on {param.device}"
            )
            self.report(self._explanation)

    def on_module_call(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self._explanation is not None or module is self.guard.model:
            return  # one report per forward pass; the model itself is checked above
        param = first_parameter(module, recurse=False)
        if param is None:
            return
        device = _off_device(args, param.device)
        if device is not None:
            self._explanation = (
                f"{module_path(module, self.guard.model)} ({describe_layer(module)}) got an "
                f"input on {device}, but its parameters are on {param.device}"
            )
            self.report(
                self._explanation,
                hint="create tensors inside forward() on the input's device: "
                "torch.zeros(n, device=x.device)",
            )

    def on_loss_call(self, loss: torch.nn.Module, args: tuple[Any, ...]) -> None:
        tensors = list(tensors_in(args[:2], depth=1))
        if len(tensors) == 2 and _off_device((tensors[1],), tensors[0].device) is not None:
            self._explanation = (
                f"{type(loss).__name__} got its input on {tensors[0].device} "
                f"and its target on {tensors[1].device}"
            )
            self.report(
                self._explanation,
                hint="move the targets with the inputs: targets = targets.to(device)",
            )

    def on_module_error(
        self, module: torch.nn.Module, args: tuple[Any, ...], error: BaseException
    ) -> None:
        if self._explanation is not None:
            self.guard.explain(error, f"{self.code} {self._explanation}")


RUNTIME_MONITORS: tuple[type[RuntimeMonitor], ...] = (DeviceMismatchMonitor,)
