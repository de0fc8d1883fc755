"""PG201 on a machine without a GPU: a tensor subclass that says it lives on cuda:0, and meta."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_map

from pitfall_guard.config import Config
from pitfall_guard.runtime.guard import Guard


class FakeCudaTensor(torch.Tensor):
    """CPU data that reports device cuda:0; mixing it with CPU tensors raises PyTorch's own
    device error, as a real CUDA tensor would."""

    payload: torch.Tensor

    @staticmethod
    def __new__(cls, data: torch.Tensor) -> FakeCudaTensor:
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls, data.shape, dtype=data.dtype, device=torch.device("cuda:0")
        )
        wrapper.payload = data
        return wrapper

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls, func: Any, types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        devices: set[str] = set()

        def unwrap(value: Any) -> Any:
            if isinstance(value, FakeCudaTensor):
                devices.add("cuda:0")
                return value.payload
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                devices.add(str(value.device))
            return value

        args, kwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs or {})
        if len(devices) > 1:
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two "
                f"devices, {' and '.join(sorted(devices))}!"
            )
        return tree_map(
            lambda out: FakeCudaTensor(out) if isinstance(out, torch.Tensor) else out,
            func(*args, **kwargs),
        )


class Net(nn.Module):
    def __init__(self, make_extra: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)
        self.make_extra = make_extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.features(x)
        if self.make_extra:
            hidden = FakeCudaTensor(torch.zeros(hidden.shape))  # made without the input's device
        return self.head(hidden)  # type: ignore[no-any-return]


def predict(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model(batch)  # type: ignore[no-any-return]


def test_batch_on_another_device_is_named_before_pytorchs_error() -> None:
    with Guard(config=Config()) as guard, pytest.raises(RuntimeError) as raised:
        predict(Net(), FakeCudaTensor(torch.randn(3, 4)))
    [finding] = guard.findings
    assert finding.code == "PG201"
    assert finding.message == "Net got its input on cuda:0, but its parameters are on cpu"
    assert finding.path.endswith("test_devices.py")
    assert finding.line == predict.__code__.co_firstlineno + 1  # the `model(batch)` line
    assert "same device" in str(raised.value)
    assert f"pitfall-guard: PG201 {finding.message}" in raised.value.__notes__


def test_tensor_made_inside_forward_names_the_layer() -> None:
    with Guard(config=Config()) as guard, pytest.raises(RuntimeError):
        Net(make_extra=True)(torch.randn(3, 4))
    [finding] = guard.findings
    assert finding.message == (
        "Net.head (Linear(in_features=8, out_features=2, bias=True)) got an input on cuda:0, "
        "but its parameters are on cpu"
    )
    assert finding.hint is not None and "device=x.device" in finding.hint


def test_model_on_meta_with_a_cpu_batch() -> None:
    model = Net().to("meta")
    with Guard(config=Config()) as guard, pytest.raises(RuntimeError):
        model(torch.randn(3, 4))
    assert [f.message for f in guard.findings] == [
        "Net got its input on cpu, but its parameters are on meta"
    ]


def test_loss_input_and_target_on_different_devices() -> None:
    loss_fn = nn.CrossEntropyLoss()
    with Guard(config=Config()) as guard, pytest.raises(RuntimeError):
        loss_fn(torch.randn(3, 2), FakeCudaTensor(torch.tensor([0, 1, 1])))
    assert [f.message for f in guard.findings] == [
        "CrossEntropyLoss got its input on cpu and its target on cuda:0"
    ]


def test_cpu_scalars_and_models_on_one_device_are_fine() -> None:
    model = Net()
    with Guard(config=Config()) as guard:
        (model(torch.randn(3, 4)) * torch.tensor(2.0)).sum().backward()
    assert guard.findings == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda_model_with_a_cpu_batch() -> None:
    model = Net().to("cuda")
    with Guard(config=Config()) as guard, pytest.raises(RuntimeError):
        model(torch.randn(3, 4))
    assert [f.message for f in guard.findings] == [
        "Net got its input on cpu, but its parameters are on cuda:0"
    ]
