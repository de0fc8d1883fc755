"""Words for what the hooks see: module paths, layers, shapes (no torch import needed)."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_names: weakref.WeakKeyDictionary[torch.nn.Module, dict[int, str]] = weakref.WeakKeyDictionary()


def module_path(module: torch.nn.Module, model: torch.nn.Module | None) -> str:
    """`MnistCnn.fc1`: the qualified name of `module` in `model`, led by the model's class."""
    model_name = type(model).__name__ if model is not None else ""
    if model is None or module is model:
        return type(module).__name__
    names = _names.get(model)
    if names is None or id(module) not in names:
        names = _names[model] = {id(sub): name for name, sub in model.named_modules()}
    name = names.get(id(module))
    return f"{model_name}.{name}" if name else type(module).__name__


def describe_layer(module: torch.nn.Module) -> str:
    """`Linear(in_features=9216, out_features=128, bias=True)`: the layer as PyTorch prints it."""
    return f"{type(module).__name__}({module.extra_repr()})"


def shape_text(value: Any) -> str:
    """`(64, 1, 28, 28)` for a tensor; the shapes of a tuple or list of tensors; else the type."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return "(" + ", ".join(str(size) for size in shape) + ")"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(shape_text(item) for item in value) + "]"
    return type(value).__name__


def tensors_in(value: Any, depth: int = 2) -> Iterator[torch.Tensor]:
    """The tensors of a forward's arguments or output: the value itself, or inside tuples,
    lists and dicts (two levels deep)."""
    if isinstance(value, _tensor_type()):
        yield value
    elif depth > 0 and isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item, depth - 1)
    elif depth > 0 and isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item, depth - 1)


@functools.cache
def _tensor_type() -> type[torch.Tensor]:
    import torch

    return torch.Tensor


def first_parameter(module: torch.nn.Module, recurse: bool = True) -> torch.Tensor | None:
    if not recurse:
        # The module's own parameters, read without building a generator on every call.
        for param in module._parameters.values():
            if param is not None:
                return param
        return None
    return next(module.parameters(), None)
