from __future__ import annotations

import textwrap

import libcst as cst

from pitfall_guard.static.facts import EventKind, Facts, Kind


def facts_of(source: str) -> Facts:
    return Facts.build(cst.parse_module(textwrap.dedent(source)))


def test_imports_and_aliases_resolve_to_qualified_names() -> None:
    facts = facts_of(
        """
        import torch.nn as nn
        from torch import optim as O
        from torch.optim.lr_scheduler import StepLR
        import torchvision
        model = nn.Sequential(nn.Linear(2, 2))
        opt = O.SGD(model.parameters(), lr=0.1)
        sched = StepLR(opt, 1)
        data = torchvision.datasets.MNIST("data")
        loader = torch.utils.data.DataLoader(data)
        criterion = nn.CrossEntropyLoss()
        """
    )
    assert facts.bindings == {
        "model": Kind.MODEL,
        "opt": Kind.OPTIMIZER,
        "sched": Kind.SCHEDULER,
        "data": Kind.DATASET,
        "loader": Kind.LOADER,
        "criterion": Kind.LOSS,
    }
    assert facts.qualified_name(cst.parse_expression("O.Adam")) == "torch.optim.Adam"


def test_local_module_classes_and_moves() -> None:
    facts = facts_of(
        """
        import torch
        from torch import nn
        class Base(nn.Module):
            pass
        class Net(Base):
            pass
        net = Net().to("cuda")
        other = Net()
        other.cuda()
        plain = Net()
        """
    )
    assert facts.is_module_class("Net") and facts.kind_of_name("net") is Kind.MODEL
    assert facts.is_moved("net") and facts.is_moved("other") and not facts.is_moved("plain")


def test_loop_events_in_source_order_and_helpers_expanded() -> None:
    facts = facts_of(
        """
        import torch
        opt = torch.optim.SGD(params, lr=0.1)
        scaler = torch.amp.GradScaler()
        def clear():
            opt.zero_grad()
        for x in loader:
            clear()
            scaler.scale(loss(x)).backward()
            scaler.step(opt)
            model.eval()
        """
    )
    [loop] = facts.loops
    kinds = [event.kind for event in facts.expand(loop.events)]
    assert [k for k in kinds if k is not EventKind.CALL] == [
        EventKind.CLEAR,
        EventKind.BACKWARD,
        EventKind.STEP,
        EventKind.EVAL_MODE,
    ]
    assert facts.clears_gradients("clear")
    step = next(e for e in loop.events if e.kind is EventKind.STEP)
    assert step.target == "opt"


def test_call_sites_know_when_gradients_are_off() -> None:
    facts = facts_of(
        """
        import torch
        @torch.no_grad()
        def evaluate():
            model(a)
        with torch.inference_mode():
            model(b)
        model(c)
        """
    )
    flags = {
        cst.Module([]).code_for_node(site.node): site.no_grad or site.function.no_grad
        for site in facts.calls
        if site.node.args
    }
    assert flags == {"model(a)": True, "model(b)": True, "model(c)": False}
