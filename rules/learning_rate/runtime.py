"""PG5xx at runtime: update sizes far from what trains, losses that are NaN or diverge.

No torch import at module level: the plugin manager imports this module for `check` too.

Both monitors need values that live on the device. They keep them there (a list of detached
losses, the update ratios of a few sampled steps) and read them in one transfer when the
guard asks, every K steps and at exit: never a host-device sync per step.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pitfall_guard.runtime.attribution import Site
from pitfall_guard.runtime.monitor import RuntimeMonitor

if TYPE_CHECKING:
    import torch

    from pitfall_guard.runtime.guard import Guard

SAMPLED_STEPS = 3  # the first steps of a window of K steps have their update measured...
# ...in windows 0, 1, 2, 4, 8, 16...: early for a short run, ever rarer after (the copy of
# the weights a measure needs costs more than the rest of the guard's step).
TOO_HIGH = 1.0  # updates as large as the weights themselves, step after step
TOO_LOW = 1e-5  # the weights barely move: a thousandth of the ~1e-3..1e-2 that trains
SURELY_LOW_LR = 1e-5  # below the usual range of every optimizer (Adam fine-tuning: 1e-5)
NEAR_ZERO_RMS = 1e-3  # weights that start with a root-mean-square below this are left out
WEIGHT_BUDGET = 16_000_000  # elements copied per sampled step, at most
EMA_BETA = 0.98  # the smoothing of the LR range test (fastai's lr_find)
DIVERGED_FACTOR = 4.0  # the LR range test stops when the smoothed loss is 4x its best
MIN_STEPS_FOR_TREND = 10
MAX_PENDING_LOSSES = 1024


def _lr(optimizer: torch.optim.Optimizer) -> float | torch.Tensor:
    lr: float | torch.Tensor = optimizer.param_groups[0]["lr"]
    return lr


def _lr_range(lr: float, ratio: float) -> tuple[float, float]:
    """Learning rates that would bring the update ratio to 1e-3..1e-1 (it scales with lr)."""
    return lr * 1e-3 / ratio, lr * 1e-1 / ratio


@dataclass
class _UpdateWindow:
    weights: list[torch.Tensor]  # the sampled weights (matrices and kernels, not biases)
    initial_lr: float | torch.Tensor  # a tensor lr is read with the ratios, not before
    snapshot: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
    ratios: list[torch.Tensor] = field(default_factory=list)
    lrs: list[float | torch.Tensor] = field(default_factory=list)
    site: Site | None = None


class LearningRateOutOfRangeMonitor(RuntimeMonitor):
    """
    ## What it catches
    A learning rate far outside what trains, measured by the update/weight ratio: how much a
    step changes the weights relative to their size (`|w_after - w_before| / |w_before|`,
    over the weight matrices). Over a window of sampled steps it stays above 1 (lr far too
    high) or below 1e-5 (lr far too low, at the optimizer's initial lr, when that lr is below
    1e-5: tiny updates at a usual lr come from tiny gradients, a converged model). It is said
    at the line that builds the optimizer (where the lr is fixed), with the line of its steps.

    ## Why it matters
    With updates as large as the weights, training jumps around and diverges or dies (dead
    ReLUs, loss stuck at chance); with updates a million times smaller than the weights, the
    model does not move in any reasonable time. Neither raises an error.

    ## Example
    ```python
    optimizer = torch.optim.Adam(model.parameters(), lr=10)
    ```

    ## Fix
    Use the learning rate the message suggests (it scales the current lr so that updates are
    about 1e-3..1e-1 of the weights), or run an LR range test. Typical values: Adam 1e-4..1e-3,
    SGD with momentum 1e-3..1e-1.
    """

    code = "PG501"
    name = "learning-rate-out-of-range"
    summary = "updates are far too large or too small relative to the weights"
    hint = "set the learning rate in the suggested range, or run an LR range test"

    VALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(12):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(torch.randn(16, 8)), torch.randn(16, 1)).backward()
    optimizer.step()
""",
        # a converged model: tiny updates from tiny gradients, at a usual lr
        """
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
inputs = torch.randn(64, 4)
targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
with torch.no_grad():
    model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]]) + 1e-4)
    model.bias.zero_()
for _ in range(30):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(inputs), targets).backward()
    optimizer.step()
""",
    )
    INVALID = (
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=50.0)  # expect: PG501
for _ in range(3):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(torch.randn(16, 8)), torch.randn(16, 1)).backward()
    optimizer.step()
""",
        """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)  # expect: PG501
for _ in range(3):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(torch.randn(16, 8)), torch.randn(16, 1)).backward()
    optimizer.step()
""",
    )

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        import torch

        self._torch = torch
        self._windows: dict[int, tuple[torch.optim.Optimizer, _UpdateWindow]] = {}
        self._initial: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}

    def _window(self, optimizer: torch.optim.Optimizer) -> _UpdateWindow:
        known = self._windows.get(id(optimizer))
        if known is not None and known[0] is optimizer:
            return known[1]
        weights, size = [], 0
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.dim() >= 2 and param.requires_grad and size < WEIGHT_BUDGET:
                    weights.append(param)
                    size += param.numel()
        group = optimizer.param_groups[0]
        initial = group.get("initial_lr", group["lr"])  # schedulers keep the lr they started at
        window = _UpdateWindow(weights, initial)
        self._windows[id(optimizer)] = (optimizer, window)
        return window

    def on_step(self, optimizer: torch.optim.Optimizer) -> None:
        steps, every = self.guard.steps, self.guard.check_every
        window = steps // every
        if steps % every >= SAMPLED_STEPS or window & (window - 1):
            return
        window = self._window(optimizer)
        weights = [weight for weight in window.weights if weight.grad is not None]
        if not weights:
            return
        with self._torch.no_grad():
            window.snapshot = (weights, self._torch._foreach_mul(weights, 1.0))
        window.site = self.guard.user_site()

    def on_step_done(self, optimizer: torch.optim.Optimizer) -> None:
        known = self._windows.get(id(optimizer))
        if known is None or known[1].snapshot is None:
            return
        window = known[1]
        weights, before = window.snapshot or ([], [])
        window.snapshot = None
        torch = self._torch
        with torch.no_grad():
            device = before[0].device
            change = torch._foreach_norm(torch._foreach_sub(weights, before))
            size = torch._foreach_norm(before)
            changes = torch.stack([n.to(device, torch.float32) for n in change])
            sizes = torch.stack([n.to(device, torch.float32) for n in size])
            # Weights that started at (nearly) zero, such as a zero-initialised layer or
            # LoRA's B, change by a large part of their size for many steps whatever the lr:
            # leave them out (on the device, with where(): a boolean index would sync).
            grown = torch.stack(
                [self._started_nonzero(w, n, device) for w, n in zip(weights, size, strict=True)]
            )
            change_norm = torch.where(grown, changes, 0.0).norm()
            size_norm = torch.where(grown, sizes, 0.0).norm()
            window.ratios.append(change_norm / size_norm)
        window.lrs.append(_lr(optimizer))

    def _started_nonzero(
        self, weight: torch.Tensor, norm: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        """On the device: whether the weight's root-mean-square was above NEAR_ZERO_RMS the
        first time it was measured (kept, so that it is judged once, before it grows)."""
        known = self._initial.get(id(weight))
        if known is None or known[0]() is not weight:
            flag = (
                norm.to(device, self._torch.float32) / math.sqrt(weight.numel())
            ) > NEAR_ZERO_RMS
            known = self._initial[id(weight)] = (weakref.ref(weight), flag)
        return known[1]

    def read_device_state(self, final: bool) -> None:
        full = min(SAMPLED_STEPS, self.guard.check_every)
        for optimizer, window in self._windows.values():
            # A window still filling (findings read mid-run) waits for its samples.
            if len(window.ratios) >= full or (final and window.ratios):
                ratios = self._torch.stack(window.ratios).tolist()  # the one sync
                lrs = [float(lr) for lr in window.lrs]
                window.ratios, window.lrs = [], []
                self._judge(optimizer, window, ratios, lrs)

    def _judge(
        self,
        optimizer: torch.optim.Optimizer,
        window: _UpdateWindow,
        ratios: list[float],
        lrs: list[float],
    ) -> None:
        # A zero update (no gradient reached the weights) says nothing about the lr.
        valid = [ratio for ratio in ratios if math.isfinite(ratio) and ratio > 0]
        if len(valid) < 2:
            return
        typical = math.exp(sum(math.log(ratio) for ratio in valid) / len(valid))
        lr, name = lrs[-1], type(optimizer).__name__
        if typical > TOO_HIGH:
            low, high = _lr_range(lr, max(valid))
            verdict = "far too high"
        elif (
            typical < TOO_LOW
            and lr < SURELY_LOW_LR
            and lr <= float(window.initial_lr)
            and lrs[0] == lr
        ):
            # Only the lr the user chose: a decayed or warming-up schedule is not a mistake;
            # and only below every optimizer's usual range: tiny updates at a usual lr mean
            # tiny gradients, a model that has converged.
            low, high = _lr_range(lr, typical)
            verdict = "far too low"
        else:
            return
        # Said where the optimizer is built (where the lr is fixed), with the step's line.
        built = self.guard.optimizer_site(optimizer)
        stepped = (
            f" (measured at its steps, line {window.site.line})"
            if built is not None and window.site is not None and built.line != window.site.line
            else ""
        )
        self.report(
            f"{name} with lr={lr:g} changes the weights by {typical:.2g}x their size per "
            f"step (training works around 1e-3..1e-1){stepped}: the learning rate is {verdict}; "
            f"try lr between {low:.0e} and {high:.0e}",
            site=built or window.site,
            count=len(valid),
        )


class _FunctionalLoss:
    """Stands for a loss computed without a loss module (named "training" in messages)."""


@dataclass
class _LossSeries:
    loss: Any  # the loss module, kept so that its id stays its own
    site: Site | None
    pending: list[torch.Tensor] = field(default_factory=list)
    average: float = 0.0
    steps: int = 0
    initial: float | None = None
    best: float = math.inf
    # A loss that went negative is a signed objective (a policy gradient), not a loss to
    # drive down to zero: only NaN is judged then.
    signed: bool = False
    diverged: bool = False  # then a NaN that follows is said where the divergence was


class LossDivergedMonitor(RuntimeMonitor):
    """
    ## What it catches
    A training loss that is NaN or infinite, or that diverges: its smoothed value (the
    debiased moving average an LR range test uses) rises above 4 times its best (once it has
    settled, after 10 steps) and above where it started, and is still there at the end of
    the window read. Each loss module is followed per line (a GAN's two losses through one
    BCELoss are two series), a loss that goes negative (a policy gradient's signed
    objective) is judged for NaN only, and the probes LBFGS evaluates in `step(closure)` are
    not training losses. With one optimizer, a divergence (and the NaN it ends in) is said at
    the line that builds it, with the loss's line: its learning rate is the usual fix.

    ## Why it matters
    Once the loss is NaN, every weight becomes NaN at the next step and the rest of the run is
    wasted; a diverging loss means the steps are too large for the landscape. Training loops
    print a number and go on.

    ## Example
    ```python
    optimizer = torch.optim.SGD(model.parameters(), lr=10.0)
    ```

    ## Fix
    Lower the learning rate (an LR range test finds one), add warm-up or gradient clipping
    (`torch.nn.utils.clip_grad_norm_`), and check the inputs and the loss for NaN sources
    (log of 0, division by 0).
    """

    code = "PG502"
    name = "loss-diverged"
    summary = "the training loss is NaN/inf, or rises far above its best"
    hint = "lower the learning rate, add warm-up or gradient clipping, check inputs for NaN"

    VALID = (
        """
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.MSELoss()
inputs = torch.randn(64, 4)
targets = inputs.sum(1, keepdim=True)
for _ in range(30):
    optimizer.zero_grad()
    loss_fn(model(inputs), targets).backward()
    optimizer.step()
""",
        # a GAN's two losses through one BCELoss (the discriminator's low, the generator's
        # higher) are two series, not one that seems to rise
        """
import torch
from torch import nn
D = nn.Linear(1, 1)
opt_d = torch.optim.SGD(D.parameters(), lr=1e-3)
bce = nn.BCELoss()
one = torch.ones(1)
for _ in range(40):
    opt_d.zero_grad()
    confident = torch.sigmoid(D(torch.ones(1, 1)).reshape(1) * 0 + 4.6)
    bce(confident, one).backward()  # about 0.01
    unsure = torch.sigmoid(D(torch.ones(1, 1)).reshape(1) * 0)
    bce(unsure, one).backward()  # about 0.69
    opt_d.step()
""",
        # an early spike the loss comes back from; a signed policy-gradient objective
        """
import torch
from torch import nn
model = nn.Linear(1, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
values = [0.1, 6.0, 5.0, 3.0] + [1.0 / (1 + i) for i in range(40)]
for value in values:
    optimizer.zero_grad()
    (model(torch.ones(1, 1)).sum() * 0 + value).backward()
    optimizer.step()
policy = nn.Linear(4, 2)
opt_p = torch.optim.SGD(policy.parameters(), lr=1e-3)
for step in range(40):
    opt_p.zero_grad()
    log_prob = torch.log_softmax(policy(torch.randn(8, 4)), dim=1)[:, 0]
    reward = torch.full((8,), 10.0 * (step % 5) - 15.0)
    (-(log_prob * reward).mean()).backward()
    opt_p.step()
""",
        # LBFGS probes the closure during its line search
        """
import torch
from torch import nn
torch.manual_seed(0)
x = torch.linspace(-1, 1, 50).unsqueeze(1)
y = 3 * x**2 - x
model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
optimizer = torch.optim.LBFGS(
    model.parameters(), lr=1.0, max_iter=20, line_search_fn="strong_wolfe"
)
loss_fn = nn.MSELoss()
def closure():
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    return loss
for _ in range(15):
    optimizer.step(closure)
""",
    )
    INVALID = (
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
loss_fn = nn.MSELoss()
inputs, targets = torch.randn(8, 4), torch.randn(8, 1)
inputs[0, 0] = float("nan")
loss_fn(model(inputs), targets).backward()  # expect: PG502
""",
        # a loss of torch.nn.functional is seen where it is computed; a formula when it is
        # back-propagated
        """
import torch
from torch import nn
model = nn.Linear(4, 1)
inputs, targets = torch.randn(8, 4), torch.randn(8, 1)
inputs[0, 0] = float("nan")
loss = nn.functional.mse_loss(model(inputs), targets)  # expect: PG502
loss.backward()
formula = ((model(inputs) - targets) ** 2).mean()
formula.backward()  # expect: PG502
""",
        """
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Linear(4, 1)
# the lr is fixed where the optimizer is built: both findings point there
optimizer = torch.optim.SGD(model.parameters(), lr=0.4)  # expect: PG501, PG502
loss_fn = nn.MSELoss()
inputs = torch.randn(64, 4) * 3
targets = inputs.sum(1, keepdim=True)
for _ in range(30):
    optimizer.zero_grad()
    loss_fn(model(inputs), targets).backward()
    optimizer.step()
""",
    )

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)
        import torch

        self._torch = torch
        self._series: dict[object, _LossSeries] = {}
        self._recorded_in_step = False
        self._stepped: set[int] = set()
        self._optimizers: list[Site] = []  # where the stepping optimizers were built
        # The latest outputs of loss modules, by identity (`==` on tensors would compare
        # values, on the device): their backward() is already followed by on_loss_return.
        self._module_losses: deque[weakref.ref[torch.Tensor]] = deque(maxlen=16)

    def on_loss_return(self, loss: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        # Training losses only (with a graph), and scalars (reduction="none" is not a loss yet).
        if getattr(output, "grad_fn", None) is None or output.numel() != 1:
            return
        self._module_losses.append(weakref.ref(output))
        # Per loss module and line: a GAN's discriminator and generator losses may share one
        # BCELoss, and are two series.
        site = self.guard.user_site()
        key = (id(loss), site.code, site.line) if site is not None else (id(loss),)
        self._record(key, loss, output, site)

    def on_backward(self, tensor: torch.Tensor) -> None:
        # A loss computed with functions (F.mse_loss, a formula): seen when it is
        # back-propagated, and followed per line of that backward() call.
        if tensor.numel() != 1 or any(ref() is tensor for ref in self._module_losses):
            return
        site = self.guard.user_site()
        key = ("backward", site.code, site.line) if site is not None else ("backward",)
        self._record(key, _FunctionalLoss(), tensor, site)

    def on_step(self, optimizer: torch.optim.Optimizer) -> None:
        self._recorded_in_step = False
        if id(optimizer) not in self._stepped:
            self._stepped.add(id(optimizer))
            site = self.guard.optimizer_site(optimizer)
            if site is not None:
                self._optimizers.append(site)

    def _record(
        self, key: object, loss: Any, output: torch.Tensor, site: Site | None = None
    ) -> None:
        if self.guard.stepping:
            # `optimizer.step(closure)`: LBFGS evaluates the closure again during its line
            # search; the first evaluation is the step's loss, the others are probes.
            if self._recorded_in_step:
                return
            self._recorded_in_step = True
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _LossSeries(loss, site or self.guard.user_site())
        series.pending.append(output.detach())
        if len(series.pending) >= MAX_PENDING_LOSSES:  # losses without optimizer steps
            self._read(series)

    def read_device_state(self, final: bool) -> None:
        for series in self._series.values():
            if series.pending:
                self._read(series)

    def _read(self, series: _LossSeries) -> None:
        values = self._torch.stack(series.pending).float().tolist()  # the one sync
        series.pending.clear()
        nonfinite, diverged, worst, still = 0, 0, 0.0, False
        for value in values:
            if not math.isfinite(value):
                nonfinite += 1
                continue
            series.signed = series.signed or value < 0
            series.steps += 1
            series.average = EMA_BETA * series.average + (1 - EMA_BETA) * value
            smoothed = series.average / (1 - EMA_BETA**series.steps)
            if series.initial is None:
                series.initial = smoothed
            if series.steps < MIN_STEPS_FOR_TREND:
                continue  # the best is judged once the average has settled, not on step 1
            series.best = min(series.best, smoothed)
            still = (
                not series.signed
                and series.best > 0
                and smoothed > DIVERGED_FACTOR * series.best
                and smoothed > series.initial
            )
            if still:
                diverged += 1
                worst = max(worst, smoothed)
        if not still:
            diverged = 0  # a spike the loss came back from, by the end of this window
        name = (
            "training" if isinstance(series.loss, _FunctionalLoss) else type(series.loss).__name__
        )
        # With one optimizer, a divergence is said where it is built: its learning rate is the
        # usual fix (and so is a NaN the divergence ends in).
        built = self._optimizers[0] if len(self._optimizers) == 1 else None
        series.diverged = series.diverged or bool(diverged)
        if nonfinite:
            self.report(
                f"the {name} loss was NaN or infinite at {nonfinite} of {len(values)} steps: "
                "one such backward pass makes the weights NaN",
                site=(built if series.diverged else None) or series.site,
                count=nonfinite,
            )
        if diverged:
            line = f" (the loss at line {series.site.line})" if built and series.site else ""
            self.report(
                f"the {name} loss diverged{line}: its smoothed value reached {worst:.3g}, "
                f"{worst / series.best:.3g} times its best ({series.best:.3g})",
                site=built or series.site,
                count=diverged,
            )


RUNTIME_MONITORS: tuple[type[RuntimeMonitor], ...] = (
    LearningRateOutOfRangeMonitor,
    LossDivergedMonitor,
)
