"""Losses computed with `torch.nn.functional` (the Lightning, timm and Hugging Face style),
seen as the loss modules they stand for.

While a guard is active, `F.cross_entropy`, `F.mse_loss` and the other losses of the table
are wrapped: a call from the user's code (not from inside a loss module, whose own hooks
already report it) emits the loss events with a stand-in module of the matching class
(`nn.CrossEntropyLoss()` for `F.cross_entropy`), so every loss monitor reads both styles
alike. Under torch.compile and torch.func transforms the wrappers only call through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pitfall_guard.runtime.patch import replace

if TYPE_CHECKING:
    import torch

    from pitfall_guard.runtime.hooks import EventDispatcher

# The functional losses and the loss modules they stand for.
FUNCTIONAL_LOSSES = {
    "cross_entropy": "CrossEntropyLoss",
    "nll_loss": "NLLLoss",
    "mse_loss": "MSELoss",
    "l1_loss": "L1Loss",
    "smooth_l1_loss": "SmoothL1Loss",
    "huber_loss": "HuberLoss",
    "binary_cross_entropy": "BCELoss",
    "binary_cross_entropy_with_logits": "BCEWithLogitsLoss",
}


class FunctionalLosses:
    """Installs and removes the wrappers of `torch.nn.functional`'s losses."""

    def __init__(self, dispatcher: EventDispatcher) -> None:
        self.dispatcher = dispatcher
        self._restores: list[Callable[[], None]] = []

    def install(self) -> None:
        import torch.nn.functional as F
        from torch import nn

        for name, module_name in FUNCTIONAL_LOSSES.items():
            original = getattr(F, name, None)
            stand_in = getattr(nn, module_name, None)
            if original is None or stand_in is None:
                continue
            # Named as the user wrote it, so that messages say "F.mse_loss compares ...".
            named = type(f"F.{name}", (stand_in,), {"__module__": "torch.nn.functional"})
            self._restores.append(replace(F, name, self._wrap(original, named())))

    def uninstall(self) -> None:
        for restore in reversed(self._restores):
            restore()
        self._restores.clear()

    def _wrap(self, original: Callable[..., Any], stand_in: torch.nn.Module) -> Callable[..., Any]:
        dispatcher = self.dispatcher

        def loss(*args: Any, **kwargs: Any) -> Any:
            if not dispatcher.watches_functional_loss():
                return original(*args, **kwargs)
            inputs = (*args, *(kwargs[key] for key in ("input", "target") if key in kwargs))
            dispatcher.functional_loss_call(stand_in, inputs)
            output = original(*args, **kwargs)
            dispatcher.functional_loss_return(stand_in, inputs, output)
            return output

        return loss
