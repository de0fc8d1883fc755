"""The guard never breaks a compiled model: its hooks stay out of what torch.compile traces,
and it watches the compiled module from outside."""

from __future__ import annotations

import pytest

from tests.runtime.conftest import guarded

TRAINING = """
import torch
from torch import nn
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
compiled = COMPILE
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(4):
    loss = nn.functional.cross_entropy(compiled(torch.randn(4, 8)), torch.randint(0, 2, (4,)))
    loss.backward()
    optimizer.step()  # never cleared: PG101
"""


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_a_model_compiled_with_torch_compile_trains_and_is_checked(backend: str) -> None:
    source = TRAINING.replace("COMPILE", f"torch.compile(model, backend={backend!r})")
    guard, error = guarded(source)
    assert error is None
    assert guard.watched.steps == 4 and guard.watched.forwards == 4
    assert [finding.code for finding in guard.findings] == ["PG101"]


def test_a_module_compiled_in_place_trains_and_is_checked() -> None:
    source = TRAINING.replace("COMPILE", 'model.compile(backend="eager") or model')
    guard, error = guarded(source)
    assert error is None
    assert guard.watched.steps == 4
    assert [finding.code for finding in guard.findings] == ["PG101"]
