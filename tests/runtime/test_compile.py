"""The guard never breaks a compiled or transformed model: its hooks stay out of what
torch.compile traces and of torch.func transforms, and it watches the module from outside."""

from __future__ import annotations

import pytest

from tests.runtime.conftest import guarded

TRAINING = """
import torch
from torch import nn
torch.manual_seed(0)
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


def test_per_sample_gradients_with_torch_func_are_left_alone() -> None:
    guard, error = guarded(
        """
        import torch
        from torch import nn
        from torch.func import functional_call, grad, vmap
        model = nn.Linear(4, 2)
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        params = {k: v.detach() for k, v in model.named_parameters()}
        def loss_fn(p, x, y):
            return criterion(functional_call(model, p, (x.unsqueeze(0),)), y.unsqueeze(0))
        for step in range(3):
            x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
            per_sample = vmap(grad(loss_fn), in_dims=(None, 0, 0))(params, x, y)
            for name, p in model.named_parameters():
                p.grad = per_sample[name].mean(0)
            optimizer.step()
            optimizer.zero_grad()
        """
    )
    assert error is None
    assert guard.findings == []  # no PG002: the monitors never see functorch's wrappers
    assert guard.watched.steps == 3
