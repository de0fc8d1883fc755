"""PG1xx: gradients. What clears them, and when."""

from __future__ import annotations

import libcst as cst

from pitfall_guard.static.facts import EventKind, Loop
from pitfall_guard.static.rule import StaticRule


class GradientsNotCleared(StaticRule):
    """
    ## What it catches
    A training loop that calls `loss.backward()` and `optimizer.step()` every iteration, with
    nothing in the loop that clears the gradients: no `optimizer.zero_grad()`, no
    `model.zero_grad()`, no `p.grad = None`.

    ## Why it matters
    `backward()` adds to `.grad`; it does not overwrite it. Without clearing, every step
    applies the sum of all gradients so far, so the effective learning rate grows with each
    iteration and training oscillates or diverges, with no error anywhere.

    ## Example
    ```python
    for images, labels in loader:
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
    ```

    ## Fix
    Clear the gradients once per step, before `backward()` (or right after `step()`):
    ```python
    for images, labels in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
    ```
    Gradient accumulation (several `backward()` per `step()`, cleared after the step) is
    correct code and is not reported.
    """

    code = "PG101"
    name = "gradients-not-cleared"
    summary = "backward() and step() in a loop with nothing that clears the gradients"
    hint = "call optimizer.zero_grad() once per step, before loss.backward()"

    VALID = (
        """
import torch
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()
""",
        # zero_grad at the end of the body
        """
import torch
from torch import optim
optimizer = optim.Adam(model.parameters())
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""",
        # gradient accumulation: k backward passes per step, cleared after the step
        """
import torch
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / 4
    loss.backward()
    if (i + 1) % 4 == 0:
        optimizer.step()
        optimizer.zero_grad()
""",
        # model.zero_grad() and p.grad = None both clear
        """
import torch
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for x, y in loader:
    net.zero_grad()
    loss_fn(net(x), y).backward()
    opt.step()
for x, y in loader:
    for p in net.parameters():
        p.grad = None
    loss_fn(net(x), y).backward()
    opt.step()
""",
        # LBFGS: the closure clears and back-propagates
        """
import torch
opt = torch.optim.LBFGS(model.parameters())
for x, y in loader:
    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss
    opt.step(closure)
""",
        # AMP with a GradScaler, zero_grad inside a helper the loop calls
        """
import torch
scaler = torch.amp.GradScaler("cuda")
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
def reset(optimizer):
    optimizer.zero_grad(set_to_none=True)
for x, y in loader:
    reset(optimizer)
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # a scheduler step is not an optimizer step
        """
import torch
scheduler = torch.optim.lr_scheduler.StepLR(opt, 1)
for epoch in range(3):
    train_one_epoch(model, loader)
    loss.backward()
    scheduler.step()
""",
        # full-batch training: the inner loop only accumulates, the outer one steps and clears
        """
import torch
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(10):
    for x, y in loader:
        loss_fn(model(x), y).backward()
    opt.step()
    opt.zero_grad()
""",
    )
    INVALID = (
        """
import torch
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in range(5):
    for images, labels in train_loader:
        outputs = model(images)
        loss = loss_fn(outputs, labels)
        loss.backward()
        optimizer.step()  # expect: PG101
""",
        # cleared once per epoch only: the inner loop still sums gradients
        """
from torch import optim as O
opt = O.Adam(model.parameters())
for epoch in range(5):
    opt.zero_grad()
    for x, y in loader:
        loss_fn(model(x), y).backward()
        if True:
            opt.step()  # expect: PG101
""",
        # an optimizer passed as a parameter, a while loop, steps under with/try
        """
import torch
def train(model, optimizer, batches):
    step = 0
    while step < 100:
        with torch.autocast("cpu"):
            loss = model(next(batches)).sum()
        try:
            loss.backward()
            optimizer.step()  # expect: PG101
        finally:
            step += 1
""",
        # two optimizers: clearing one does not clear the other
        """
import torch
opt_d = torch.optim.Adam(disc.parameters())
opt_g = torch.optim.Adam(gen.parameters())
for real in loader:
    opt_d.zero_grad()
    d_loss(disc, gen, real).backward()
    opt_d.step()
    g_loss(disc, gen).backward()
    opt_g.step()  # expect: PG101
""",
        # AMP: scaler.step(optimizer) is the optimizer's step
        """
import torch
scaler = torch.cuda.amp.GradScaler()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for x, y in loader:
    scaler.scale(loss_fn(model(x), y)).backward()
    scaler.step(optimizer)  # expect: PG101
    scaler.update()
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        reported: set[cst.CSTNode] = set()
        # Innermost loops first, so a step is reported for the loop that repeats it most.
        for loop in reversed(self.facts.loops):
            for step, optimizer in self._uncleared_steps(loop):
                if step not in reported:
                    reported.add(step)
                    self._report(step, optimizer, loop)

    def _uncleared_steps(self, loop: Loop) -> list[tuple[cst.CSTNode, str | None]]:
        if not loop.has(EventKind.BACKWARD):
            return []
        return [
            (event.node, event.target)
            for event in loop.of_kind(EventKind.STEP)
            if not self.facts.clears_for(loop.events, event.target)
        ]

    def _report(self, step: cst.CSTNode, optimizer: str | None, loop: Loop) -> None:
        loop_line = self.context.line_of(loop.node)
        subject = f"optimizer '{optimizer}'" if optimizer else "the optimizer"
        self.report(
            step,
            f"{subject} steps in the loop at line {loop_line}, but nothing in the loop clears "
            "its gradients, so every step applies the sum of all gradients so far",
            hint=(
                f"call {optimizer or 'optimizer'}.zero_grad() once per step, "
                "before loss.backward()"
            ),
        )


STATIC_RULES: tuple[type[StaticRule], ...] = (GradientsNotCleared,)
