"""`max_steps` makes a short run that still evaluates: bounded epochs, bounded evaluations."""

from __future__ import annotations

from tests.runtime.conftest import guarded

TRAINING = """
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
data = TensorDataset(torch.randn(80, 4), torch.randint(0, 2, (80,)))
train_loader = DataLoader(data, batch_size=4)  # 20 batches
val_loader = DataLoader(data, batch_size=8)  # 10 batches
test_loader = DataLoader(data, batch_size=16)  # 5 batches
validated = []
for epoch in range(5):
    model.train()
    for i, (x, y) in enumerate(train_loader):
        nn.functional.cross_entropy(model(x), y).backward()
        if (i + 1) % ACCUMULATE == 0:
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    seen = 0
    with torch.no_grad():
        for x, y in val_loader:
            model(x)
            seen += len(y)
    validated.append(seen)
tested = 0
with torch.no_grad():
    for x, y in test_loader:
        model(x)  # the final test: still reached
        tested += len(y)
"""


def test_epochs_are_short_and_evaluations_bounded_and_the_final_test_runs() -> None:
    namespace: dict[str, object] = {}
    guard, error = guarded(
        TRAINING.replace("ACCUMULATE", "1"),
        namespace=namespace,
        max_steps=3,
        max_epochs=2,
        max_eval_batches=2,
    )
    assert error is None and not guard.stopped
    watched = guard.watched
    # 3 steps in each of 2 epochs, then one batch per epoch.
    assert watched.steps == 3 + 3 + 1 + 1 + 1
    # 2 validation batches in each of 2 epochs, then 1; the final test's 2.
    assert watched.evaluations == 2 + 2 + 1 + 1 + 1 + 2
    assert watched.cut_passes > 0


def test_gradient_accumulation_still_steps_within_the_short_epochs() -> None:
    guard, error = guarded(TRAINING.replace("ACCUMULATE", "4"), max_steps=2, max_epochs=1)
    assert error is None
    # 2 steps (8 batches) in the first epoch, then one batch per epoch, too few to step.
    assert guard.watched.steps == 2


def test_the_primers_evaluation_after_a_long_training_is_reported() -> None:
    # The seed article's evaluation: one no_grad pass, no eval(), a model with Dropout.
    primer = TRAINING.replace("ACCUMULATE", "1").replace("range(5)", "range(30)")
    primer = primer.replace("    model.eval()\n", "")
    guard, error = guarded(primer, max_steps=3)
    assert error is None and not guard.stopped
    final_test = next(n for n, line in enumerate(primer.splitlines(), 1) if "final test" in line)
    assert {(finding.code, finding.line) for finding in guard.findings} >= {("PG301", final_test)}


def test_steps_outside_data_loaders_stop_after_max_steps() -> None:
    guard, error = guarded(
        """
        import torch
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(100):
            optimizer.zero_grad()
            model(torch.ones(4, 2)).sum().backward()
            optimizer.step()
        """,
        max_steps=4,
    )
    assert error is None and guard.stopped
    assert guard.watched.steps == 4
