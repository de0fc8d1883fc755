"""PG1xx at runtime: which backward passes the gradients of each optimizer step come from.

No torch import at module level: the plugin manager imports this module for `check` too.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pitfall_guard.runtime.attribution import Site
from pitfall_guard.runtime.hooks import optimizer_params
from pitfall_guard.runtime.monitor import RuntimeListener, RuntimeMonitor

if TYPE_CHECKING:
    import torch

    from pitfall_guard.runtime.guard import Guard


@dataclass
class _GradientState:
    """What happened to one parameter's `.grad` since its optimizer last stepped."""

    param: weakref.ref[torch.Tensor]
    # The gradient tensor a step applied, and its version then: if the next backward adds to
    # that same tensor, and nothing modified it in between, it adds to an applied gradient.
    applied: weakref.ref[torch.Tensor] | None = None
    applied_version: int = 0
    # On the device: did the first backward pass after the step add to a nonzero applied
    # gradient? (`p.grad.data.zero_()` clears without a trace in the version counter; only
    # the values tell, and they are read every K steps, not now.)
    stale: torch.Tensor | None = None
    backward_since_step: bool = False
    cleared_since_backward: bool = False


class GradientLedger(RuntimeListener):
    """Tracks every hooked parameter's gradient between backward passes, clears and steps."""

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        self._states: dict[int, _GradientState] = {}

    def state(self, param: torch.Tensor) -> _GradientState:
        state = self._states.get(id(param))
        if state is None or state.param() is not param:
            state = self._states[id(param)] = _GradientState(weakref.ref(param))
        return state

    def on_grad_arriving(self, param: torch.Tensor) -> None:
        state = self.state(param)
        applied, state.applied = state.applied, None
        grad = param.grad
        # Any change since the step (zero_(), set to None, a new tensor) means something
        # cleared the applied gradient; else the new gradient is about to be added to it.
        if (
            applied is not None
            and grad is not None
            and applied() is grad
            and grad._version == state.applied_version
        ):
            state.stale = grad.ne(0).any()

    def on_grad_accumulated(self, param: torch.Tensor) -> None:
        state = self.state(param)
        state.backward_since_step = True
        state.cleared_since_backward = False

    def on_grads_cleared(self, params: Sequence[torch.Tensor]) -> None:
        for param in params:
            state = self.state(param)
            state.stale = None
            state.applied = None
            state.cleared_since_backward = True

    def on_step_done(self, optimizer: torch.optim.Optimizer) -> None:
        for param in optimizer_params(optimizer):
            state = self.state(param)
            grad = param.grad
            state.stale = None
            state.backward_since_step = False
            state.cleared_since_backward = False
            state.applied = None if grad is None else weakref.ref(grad)
            state.applied_version = 0 if grad is None else grad._version


class GradientsNotClearedMonitor(RuntimeMonitor):
    """
    ## What it catches
    An optimizer step whose gradients still contain the gradients an earlier step already
    applied: `backward()` added new gradients to them, and nothing cleared them in between.

    ## Why it matters
    `backward()` adds to `.grad`. Without clearing, each step applies the sum of all gradients
    so far: old updates are applied again and again, the effective learning rate grows with
    every step, and training oscillates or diverges with no error anywhere.

    ## Example
    ```python
    for images, labels in loader:
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
    ```

    ## Fix
    Clear the gradients once per step, before `backward()` (or right after `step()`):
    `optimizer.zero_grad(set_to_none=True)`. Gradient accumulation (several `backward()` per
    step, cleared after the step) is correct and is not reported.
    """

    code = "PG101"
    name = "gradients-not-cleared"
    summary = "a step applies gradients that an earlier step already applied"
    hint = "call optimizer.zero_grad() once per step, before loss.backward()"

    VALID = (
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(6):  # gradient accumulation: 2 backward passes per step
    model(torch.randn(8, 4)).pow(2).mean().backward()
    if step % 2 == 1:
        optimizer.step()
        optimizer.zero_grad()
""",
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
sgd = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(3):  # zero_grad at the end of the body
    model(torch.randn(8, 4)).pow(2).mean().backward()
    sgd.step()
    sgd.zero_grad(set_to_none=False)
for _ in range(3):  # clearing by hand
    model(torch.randn(8, 4)).pow(2).mean().backward()
    sgd.step()
    for param in model.parameters():
        param.grad = None
for _ in range(3):  # clearing through .data, as older code does
    model(torch.randn(8, 4)).pow(2).mean().backward()
    sgd.step()
    for param in model.parameters():
        param.grad.data.zero_()
for _ in range(3):
    model.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    sgd.step()
""",
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
lbfgs = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
inputs, targets = torch.randn(16, 4), torch.randn(16, 1)
def closure():
    lbfgs.zero_grad()
    loss = nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    return loss
for _ in range(3):
    lbfgs.step(closure)
""",
    )
    INVALID = (
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(3):
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()  # expect: PG101
""",
        # two optimizers: clearing one does not clear the other
        """
import torch
from torch import nn
first, second = nn.Linear(4, 4), nn.Linear(4, 1)
opt_first = torch.optim.SGD(first.parameters(), lr=0.01)
opt_second = torch.optim.SGD(second.parameters(), lr=0.01)
for _ in range(3):
    opt_first.zero_grad()
    second(first(torch.randn(8, 4))).pow(2).mean().backward()
    opt_first.step()
    opt_second.step()  # expect: PG101
""",
    )

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        import torch

        self._torch = torch
        self.ledger = guard.service(GradientLedger)
        # Steps that may apply stale gradients: where, which optimizer, and on the device
        # how many of its parameters really held a nonzero applied gradient.
        self._suspects: list[tuple[Site | None, str, int, torch.Tensor]] = []

    def on_step(self, optimizer: torch.optim.Optimizer) -> None:
        params = optimizer_params(optimizer)
        flags = [flag for param in params if (flag := self.ledger.state(param).stale) is not None]
        if flags:
            stale_params = self._torch.stack(flags).sum()
            site = self.guard.user_site()
            self._suspects.append((site, type(optimizer).__name__, len(params), stale_params))

    def read_device_state(self, final: bool) -> None:
        if not self._suspects:
            return
        suspects, self._suspects = self._suspects, []
        counts = self._torch.stack([stale for *_, stale in suspects]).tolist()  # the one sync
        for (site, optimizer, params, _), stale in zip(suspects, counts, strict=True):
            if stale:
                self.report(
                    f"{optimizer}.step() applies gradients summed over several backward "
                    f"passes: {stale} of its {params} parameters still held the gradient an "
                    "earlier step applied, so old updates are applied again",
                    site=site,
                )


class ZeroGradBeforeStepMonitor(RuntimeMonitor):
    """
    ## What it catches
    An optimizer step that finds all gradients of its parameters cleared after a backward pass
    computed them: `zero_grad()` runs between `backward()` and `step()`.

    ## Why it matters
    The step then applies zero gradients (or none): the model never learns from the batch,
    while the loss is computed and the loop looks busy. Momentum and weight decay may still
    move the weights, which hides the problem.

    ## Example
    ```python
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    ```

    ## Fix
    Clear before `backward()` (or after `step()`), never in between:
    ```python
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    ```
    """

    code = "PG102"
    name = "zero-grad-between-backward-and-step"
    summary = "a step finds every gradient cleared after backward() computed it"
    hint = "call optimizer.zero_grad() before loss.backward(), not between backward() and step()"

    VALID = (
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(3):
    optimizer.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
""",
    )
    INVALID = (
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(3):
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.zero_grad()
    optimizer.step()  # expect: PG102
""",
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(3):
    model(torch.randn(8, 4)).pow(2).mean().backward()
    model.zero_grad(set_to_none=False)
    optimizer.step()  # expect: PG102
""",
    )

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        self.ledger = guard.service(GradientLedger)

    def on_step(self, optimizer: torch.optim.Optimizer) -> None:
        computed = [
            (param, state)
            for param in optimizer_params(optimizer)
            if (state := self.ledger.state(param)).backward_since_step
        ]
        if computed and all(
            state.cleared_since_backward or param.grad is None for param, state in computed
        ):
            self.report(
                f"{type(optimizer).__name__}.step() finds every gradient cleared after "
                "backward() computed it, so this step learns nothing from the batch"
            )


RUNTIME_MONITORS: tuple[type[RuntimeMonitor], ...] = (
    GradientsNotClearedMonitor,
    ZeroGradBeforeStepMonitor,
)
