"""PG501/PG502 beyond the examples: the message's lr and range, schedules that are fine."""

from __future__ import annotations

from tests.runtime.conftest import guarded

TRAINING = """
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = OPTIMIZER
scheduler = SCHEDULER
for _ in range(STEPS):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(torch.randn(16, 8)), torch.randn(16, 1)).backward()
    optimizer.step()
    scheduler.step()
"""


CONSTANT = "torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)"


def training(optimizer: str, steps: int = 12, scheduler: str = CONSTANT) -> str:
    source = TRAINING.replace("OPTIMIZER", optimizer).replace("STEPS", str(steps))
    return source.replace("SCHEDULER", scheduler)


def test_too_high_names_the_current_lr_and_a_range() -> None:
    guard, _ = guarded(training("torch.optim.SGD(model.parameters(), lr=30.0)", steps=3))
    [finding] = [f for f in guard.findings if f.code == "PG501"]
    assert finding.line == 6  # where the optimizer is built, and its lr fixed
    assert finding.message.startswith("SGD with lr=30 changes the weights by ")
    assert "(measured at its steps, line 11)" in finding.message
    assert "the learning rate is far too high; try lr between " in finding.message


def test_a_warm_up_from_a_tiny_lr_is_not_too_low() -> None:
    warm_up = "torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-6, total_iters=50)"
    guard, _ = guarded(
        training("torch.optim.Adam(model.parameters(), lr=1e-3)", steps=25, scheduler=warm_up)
    )
    assert guard.findings == []


def test_a_tiny_lr_chosen_by_the_user_is_too_low() -> None:
    guard, _ = guarded(training("torch.optim.Adam(model.parameters(), lr=1e-9)", steps=12))
    [finding] = guard.findings
    assert finding.code == "PG501" and finding.count == 5  # sampled steps 0-2 and 10-11
    assert "far too low" in finding.message
