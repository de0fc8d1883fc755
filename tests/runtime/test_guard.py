"""The guard itself: hooks in and out, selection, attribution, counts, stops, device reads."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import pitfall_guard
from pitfall_guard.config import Config
from pitfall_guard.runtime.guard import Guard, GuardError
from pitfall_guard.runtime.monitor import RuntimeMonitor
from tests.runtime.conftest import guarded

FORGETS_ZERO_GRAD = """
import torch
from torch import nn
model = nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(STEPS):
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
"""


def forgets_zero_grad(steps: int) -> str:
    return FORGETS_ZERO_GRAD.replace("STEPS", str(steps))


def train_without_clearing(steps: int) -> None:
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()


def hook_state() -> dict[str, Any]:
    from torch.nn.modules import module
    from torch.optim import optimizer

    return {
        "forward_pre": dict(module._global_forward_pre_hooks),
        "forward": dict(module._global_forward_hooks),
        "forward_always": dict(module._global_forward_hooks_always_called),
        "step_pre": dict(optimizer._global_optimizer_pre_hooks),
        "step_post": dict(optimizer._global_optimizer_post_hooks),
        "optimizer_zero_grad": torch.optim.Optimizer.zero_grad,
        "module_zero_grad": nn.Module.zero_grad,
    }


def test_every_hook_is_removed_on_exit_even_when_the_code_raises() -> None:
    before = hook_state()
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(ZeroDivisionError), Guard(config=Config()):
        assert hook_state() != before
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        1 / 0  # noqa: B018
    assert hook_state() == before
    assert not any(getattr(p, "_post_accumulate_grad_hooks", None) for p in model.parameters())
    assert not Guard(config=Config()).active


def test_guard_is_a_decorator_and_exposes_its_findings() -> None:
    guard = Guard(config=Config())

    @guard
    def train() -> None:
        train_without_clearing(steps=3)

    train()
    assert [(f.code, f.count) for f in guard.findings] == [("PG101", 2)]
    assert guard.steps == 3


def test_guards_do_not_nest() -> None:
    with Guard(config=Config()), pytest.raises(GuardError), Guard(config=Config()):
        pass


def test_guard_is_exported_lazily_by_the_package() -> None:
    assert pitfall_guard.Guard is Guard


def test_max_steps_stops_the_code_cleanly_after_n_steps() -> None:
    after_loop = []
    with Guard(config=Config(), max_steps=3) as guard:
        train_without_clearing(steps=10)
        after_loop.append(True)
    assert guard.stopped and guard.steps == 3
    assert not after_loop  # the block ended at the third step
    assert [(f.code, f.count) for f in guard.findings] == [("PG101", 2)]


def test_select_and_ignore_choose_the_monitors() -> None:
    assert {m.code for m in Guard(config=Config(), select=["PG1"]).monitor_types} == {
        "PG101",
        "PG102",
    }
    guard, _ = guarded(forgets_zero_grad(3), ignore=["PG101"])
    assert guard.findings == []


def test_findings_point_at_the_users_line_once_with_a_count() -> None:
    guard, _ = guarded(forgets_zero_grad(4), filename="train.py")
    [finding] = guard.findings
    assert (finding.code, finding.path, finding.line, finding.count) == ("PG101", "train.py", 9, 3)
    # The span of the call expression `optimizer.step()`, as the code frame shows it.
    assert (finding.column, finding.location.end_column) == (5, 21)
    assert finding.source is pitfall_guard.Source.RUNTIME


def test_noqa_comment_on_the_line_silences_the_runtime_finding(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    source = forgets_zero_grad(3).replace("optimizer.step()", "optimizer.step()  # noqa: PG101")
    script.write_text(source)
    guard, _ = guarded(source, filename=str(script))
    assert guard.findings == []


class ExplodingMonitor(RuntimeMonitor):
    """Raises on every step, to prove that one broken monitor does not stop the others."""

    code = "PG101"
    name = "exploding"
    summary = "always crashes"
    calls: ClassVar[list[int]] = []

    def on_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.calls.append(1)
        raise ValueError("boom")


def test_a_crashing_monitor_is_reported_as_pg002_and_switched_off() -> None:
    from pitfall_guard.plugins import load_plugins

    others = [m for m in load_plugins().runtime_monitors if m.code != "PG101"]
    ExplodingMonitor.calls.clear()
    source = forgets_zero_grad(3).replace("optimizer.zero_grad()", "")
    source = source.replace("loss.backward()", "loss.backward()\n    optimizer.zero_grad()")
    guard, error = guarded(source, monitors=[ExplodingMonitor, *others])
    assert error is None
    assert ExplodingMonitor.calls == [1]  # switched off after the first crash
    codes = [f.code for f in guard.findings]
    assert codes == ["PG002", "PG102"]  # the other monitors kept reporting
    assert "ExplodingMonitor crashed" in guard.findings[0].message
    assert "ValueError: boom" in guard.findings[0].message


class SyncCounter(TorchFunctionMode):
    """Counts the calls of pitfall-guard's code that copy a value from a tensor to Python (a
    sync on a GPU). PyTorch's own (Adam reads its CPU step counter) are not the guard's."""

    SYNCING = frozenset({"item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"})

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        caller = str(sys._getframe(1).f_globals.get("__name__", ""))
        if name in self.SYNCING and caller.startswith("pitfall_guard"):
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting_syncs() -> Iterator[SyncCounter]:
    with SyncCounter() as counter:
        yield counter


def train_with_every_monitor_busy(steps: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(torch.randn(4, 8)), torch.tensor([0, 1, 1, 0])).backward()
        optimizer.step()


def test_no_value_is_read_from_the_device_between_the_k_step_reads() -> None:
    with Guard(config=Config(), check_every=1000) as guard:
        with counting_syncs() as counter:
            train_with_every_monitor_busy(steps=25)
        assert counter.syncs == []
    assert guard.findings == []


def test_values_are_read_every_k_steps_and_at_exit() -> None:
    with counting_syncs() as counter, Guard(config=Config(), check_every=5) as guard:
        train_with_every_monitor_busy(steps=12)
    # Two monitors read one stacked tensor each: after steps 5 and 10, and at exit.
    assert counter.syncs == ["tolist"] * 6
    assert guard.findings == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_device_sync_on_cuda_between_reads() -> None:
    device = torch.device("cuda")
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1), nn.Linear(16, 2)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    inputs = torch.randn(4, 8, device=device)
    targets = torch.tensor([0, 1, 1, 0], device=device)
    with Guard(config=Config(), check_every=1000) as guard:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(25):
                optimizer.zero_grad()
                loss_fn(model(inputs), targets).backward()
                optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert guard.findings == []


def test_findings_after_exit_are_not_recorded() -> None:
    guard, _ = guarded(
        """
        import torch
        from torch import nn
        model = nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
        kept = model(torch.randn(8, 4))  # a graph that outlives the guard
        """
    )
    assert [f.code for f in guard.findings] == ["PG302"]  # settled at exit, once
    train_without_clearing(steps=3)  # no guard: nothing recorded
    assert [f.code for f in guard.findings] == ["PG302"]
