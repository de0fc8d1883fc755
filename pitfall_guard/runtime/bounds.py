"""A short run that still evaluates: `--max-steps` bounds each epoch, not the whole script.

Stopping after N optimizer steps stops before any evaluation code runs, so the evaluation
pitfalls (PG301-PG303) would never be seen. As Lightning's `fast_dev_run` and
`limit_val_batches` do, the guard bounds the data instead, by wrapping `DataLoader.__iter__`
while it is active:

- a pass over a loader that trains (an optimizer step happened during it) ends after
  `max_steps` steps: one short epoch;
- a pass that evaluates (gradients off, or the model in eval mode) ends after
  `max_eval_batches` batches, for the first `max_epochs` such passes of each loader; later
  ones yield one batch (a final test loop over another loader gets its batches);
- after `max_epochs` epochs, the training passes yield one batch (never none: the script's
  `correct / seen` must not divide by zero), so the epoch loop runs out quickly and the code
  after it (a final test) runs; a script with more than `_SHORT_EPOCHS` epochs left is
  stopped then;
- optimizer steps outside any DataLoader pass (a loop over tensors) stop the script after
  `max_steps` of them, as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pitfall_guard.runtime.patch import replace

if TYPE_CHECKING:
    import torch

# A pass that neither steps nor evaluates (gradient accumulation, a warm-up) is cut after
# this many times max_steps batches.
_UNDECIDED_FACTOR = 16
_SHORT_EPOCHS = 50


class LoaderBounds:
    """Bounds every pass over a DataLoader (see the module's docs); `stop` ends the script."""

    def __init__(
        self,
        max_steps: int,
        max_epochs: int,
        max_eval_batches: int,
        *,
        steps: Callable[[], int],
        evaluating: Callable[[], bool],
        stop: Callable[[], None],
    ) -> None:
        self.max_steps = max_steps
        self.max_epochs = max_epochs
        self.max_eval_batches = max_eval_batches
        self._steps = steps
        self._evaluating = evaluating
        self._stop = stop
        self.active_passes = 0
        self.loose_steps = 0  # optimizer steps taken outside any DataLoader pass
        self.epochs: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.evaluations: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.cut_epochs = 0
        self.cut_passes = 0  # passes ended early or left empty: what the verdict says
        self._restore: Callable[[], None] | None = None

    def install(self) -> None:
        from torch.utils.data import DataLoader

        original = DataLoader.__dict__["__iter__"]
        bounds = self

        def __iter__(loader: torch.utils.data.DataLoader[Any]) -> Iterator[Any]:
            return bounds.bounded(loader, original(loader))

        self._restore = replace(DataLoader, "__iter__", __iter__)

    def uninstall(self) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None

    def step_done(self) -> None:
        """After each optimizer step: outside a DataLoader pass, the old total bound."""
        if self.active_passes == 0:
            self.loose_steps += 1
            if self.loose_steps >= self.max_steps:
                self._stop()

    def bounded(self, loader: object, batches: Iterator[Any]) -> Iterator[Any]:
        short = self.epochs.get(loader, 0) >= self.max_epochs
        if short:
            # The epochs are done: this training loader yields one batch per pass (never
            # none: `correct / seen` must not divide by zero), for a while.
            self.cut_epochs += 1
            if self.cut_epochs > _SHORT_EPOCHS:
                self._stop()
        return self._pass(loader, batches, 1 if short else None)

    def _pass(self, loader: object, batches: Iterator[Any], most: int | None) -> Iterator[Any]:
        start = self._steps()
        yielded = 0
        evaluated = False
        self.active_passes += 1
        try:
            for batch in batches:
                if (most is not None and yielded >= most) or self._ends_here(
                    loader, self._steps() - start, yielded, evaluated
                ):
                    self.cut_passes += 1
                    break
                evaluated = evaluated or (yielded > 0 and self._evaluating())
                yielded += 1
                yield batch
        finally:
            self.active_passes -= 1
            if self._steps() > start:
                self.epochs[loader] = self.epochs.get(loader, 0) + 1
            elif evaluated:
                self.evaluations[loader] = self.evaluations.get(loader, 0) + 1

    def _ends_here(self, loader: object, steps: int, yielded: int, evaluated: bool) -> bool:
        """Whether the pass ends before its next batch: a short epoch after max_steps steps,
        an evaluation after max_eval_batches batches (none once the loader was evaluated
        max_epochs times), anything else after many batches without a step."""
        if steps:
            return steps >= self.max_steps
        if yielded and (evaluated or self._evaluating()):
            return (
                yielded >= self.max_eval_batches
                or self.evaluations.get(loader, 0) >= self.max_epochs
            )
        return yielded >= self.max_steps * _UNDECIDED_FACTOR
