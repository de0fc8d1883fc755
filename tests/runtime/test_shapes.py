"""PG401: the shape error is raised again with the layer, its input and the shapes so far."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pitfall_guard.config import Config
from pitfall_guard.runtime.guard import Guard


class SmallCnn(nn.Module):
    def __init__(self, in_features: int, view: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3)  # 1x8x8 -> 4x6x6
        self.pool = nn.MaxPool2d(2)  # 4x6x6 -> 4x3x3
        self.fc = nn.Linear(in_features, 10)
        self.view = view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv(x)))
        x = x.view(x.size(0), 99) if self.view else torch.flatten(x, 1)
        return self.fc(x)  # type: ignore[no-any-return]


def test_shape_error_names_the_layer_its_input_and_the_shapes_before() -> None:
    with Guard(config=Config()) as guard, pytest.raises(RuntimeError) as raised:
        SmallCnn(in_features=64)(torch.randn(2, 1, 8, 8))
    [finding] = guard.findings
    assert finding.code == "PG401"
    assert finding.line == SmallCnn.forward.__code__.co_firstlineno + 3  # `self.fc(x)`
    assert finding.message == (
        "SmallCnn.fc (Linear(in_features=64, out_features=10, bias=True)) got an input of shape "
        "(2, 36): mat1 and mat2 shapes cannot be multiplied (2x36 and 64x10); shapes through "
        "the previous layers: input (2, 1, 8, 8) -> SmallCnn.conv (2, 4, 6, 6) -> "
        "SmallCnn.pool (2, 4, 3, 3)"
    )
    assert raised.value.__notes__ == [f"pitfall-guard: PG401 {finding.message}"]


def test_shape_error_in_forward_itself_points_at_the_failing_line() -> None:
    with Guard(config=Config()) as guard, pytest.raises(RuntimeError):
        SmallCnn(in_features=36, view=True)(torch.randn(2, 1, 8, 8))
    [finding] = guard.findings
    assert finding.line == SmallCnn.forward.__code__.co_firstlineno + 2  # the `view`
    assert finding.message.startswith("SmallCnn (SmallCnn()) got an input of shape (2, 1, 8, 8)")


def test_errors_that_are_not_about_shapes_are_left_alone() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("the data loader went away")

    with Guard(config=Config()) as guard, pytest.raises(RuntimeError) as raised:
        Broken()(torch.randn(2))
    assert guard.findings == []
    assert not getattr(raised.value, "__notes__", None)
