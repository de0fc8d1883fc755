"""The base classes of runtime monitors (importing this module does not import torch).

A guarded run turns PyTorch's hooks into the events below. A listener overrides the events it
needs; the guard installs only the hooks whose events some listener overrides, so a monitor
that does not watch module calls costs nothing per module call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pitfall_guard.findings import Severity

if TYPE_CHECKING:
    import torch

    from pitfall_guard.runtime.attribution import Site
    from pitfall_guard.runtime.guard import Guard

# The events a listener may override; the guard compares them against this class to know which
# hooks it must install.
EVENTS = (
    "on_model_call",
    "on_model_return",
    "on_module_call",
    "on_module_return",
    "on_module_error",
    "on_loss_call",
    "on_loss_return",
    "on_grad_arriving",
    "on_grad_accumulated",
    "on_grads_cleared",
    "on_step",
    "on_step_done",
    "on_backward",
    "read_device_state",
    "finish",
)


class RuntimeListener:
    """Receives the events of a guarded run; every event is a no-op here.

    Events are called on the thread that entered the guard. A listener that raises is reported
    as PG002 and receives no further events; the run goes on.
    """

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def on_model_call(self, model: torch.nn.Module, args: tuple[Any, ...]) -> None:
        """The outermost module call of a forward pass (a DDP/DataParallel wrapper is skipped:
        `model` is the module it wraps, `args` what the wrapper passed it). Loss modules are
        never models."""

    def on_model_return(self, model: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """The model call of `on_model_call` returned `output`."""

    def on_module_call(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        """Any module call, at any depth (the model and loss modules included)."""

    def on_module_return(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """Any module call returned normally."""

    def on_module_error(
        self, module: torch.nn.Module, args: tuple[Any, ...], error: BaseException
    ) -> None:
        """The forward of `module` raised `error`; called once, for the innermost module."""

    def on_loss_call(self, loss: torch.nn.Module, args: tuple[Any, ...]) -> None:
        """A loss module (`torch.nn.modules.loss._Loss`) is called with (input, target, ...)."""

    def on_loss_return(self, loss: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """A loss module returned `output`."""

    def on_grad_arriving(self, param: torch.Tensor) -> None:
        """A backward pass has computed a gradient for `param`, and is about to add it to
        `param.grad` (which still holds what it held before)."""

    def on_grad_accumulated(self, param: torch.Tensor) -> None:
        """A backward pass has just accumulated a gradient into `param.grad`."""

    def on_grads_cleared(self, params: Sequence[torch.Tensor]) -> None:
        """`Optimizer.zero_grad` or `Module.zero_grad` has just cleared these parameters."""

    def on_step(self, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.step()` is about to update the parameters."""

    def on_step_done(self, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.step()` has updated the parameters."""

    def on_backward(self, tensor: torch.Tensor) -> None:
        """`tensor.backward()` is about to run (the tensor is usually the loss)."""

    def read_device_state(self, final: bool) -> None:
        """Every K optimizer steps, and once when the guard exits (`final`): the only time a
        listener may read values from the device (one host-device sync, not one per step)."""

    def finish(self, completed: bool) -> None:
        """The guard exits; `completed` is True when the guarded code ran to its end, False
        when it raised or was stopped after --max-steps (work may be half done: a forward pass
        waiting for its backward pass). Called after the final `read_device_state`."""


class RuntimeMonitor(RuntimeListener):
    """Watches one pitfall during a real run.

    Subclasses set `code`, `name` and `summary` (the same code and name as the static rule for
    the same pitfall, so that both sides speak one language), document themselves in the class
    docstring with the headings *What it catches*, *Why it matters*, *Example* and *Fix*, and
    give `VALID` and `INVALID` example scripts: each runs under a guard in the test suite, a
    VALID one with no finding at all, an INVALID one with exactly the lines marked
    `# expect: CODE` (a line `# raises: ErrorName` says that the script ends with that error).
    """

    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    severity: ClassVar[Severity] = Severity.ERROR
    hint: ClassVar[str | None] = None
    VALID: ClassVar[tuple[str, ...]] = ()
    INVALID: ClassVar[tuple[str, ...]] = ()

    def report(
        self,
        message: str,
        *,
        site: Site | None = None,
        hint: str | None = None,
        count: int = 1,
    ) -> None:
        """Record a finding at `site` (default: the user's line that caused the current event)."""
        self.guard.report(self, message, site=site, hint=hint, count=count)
