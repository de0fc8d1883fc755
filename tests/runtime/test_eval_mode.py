"""PG301-PG303 beyond the examples: wrappers, evaluation before training, crashes."""

from __future__ import annotations

from torch import nn

from tests.runtime.conftest import guarded


def test_an_evaluation_before_training_is_reported_once_training_starts() -> None:
    guard, _ = guarded(
        """
        import torch
        from torch import nn
        model = nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        baseline = model(torch.randn(3, 4))
        del baseline
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        """
    )
    assert [(f.code, f.line) for f in guard.findings] == [("PG302", 6)]


def test_a_crash_does_not_settle_forward_passes_still_waiting_for_backward() -> None:
    guard, error = guarded(
        """
        import torch
        from torch import nn
        model = nn.Linear(4, 1)
        model(torch.randn(8, 4)).sum().backward()
        loss = model(torch.randn(8, 4)).sum()
        raise ValueError("stopped before backward")
        """
    )
    assert isinstance(error, ValueError)
    assert guard.findings == []


def test_a_data_parallel_wrapper_is_not_the_model() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    wrapped = nn.DataParallel(model)  # without GPUs it just calls the model
    guard, _ = guarded(
        """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        model.eval()  # the wrapper itself stays in training mode
        for _ in range(2):
            optimizer.zero_grad()
            wrapped(torch.randn(8, 4)).pow(2).mean().backward()
            optimizer.step()
        """,
        namespace={"model": model, "wrapped": wrapped},
    )
    [finding] = guard.findings
    assert (finding.code, finding.line, finding.count) == ("PG303", 8, 2)
    assert finding.message.startswith("SGD.step() trains Sequential while it is in evaluation")


def test_a_max_steps_stop_leaves_forward_passes_awaiting_backward_alone() -> None:
    guard, error = guarded(
        """
        import torch
        from torch import nn
        generator, critic = nn.Linear(2, 4), nn.Linear(4, 1)
        opt_g = torch.optim.SGD(generator.parameters(), lr=0.01)
        opt_c = torch.optim.SGD(critic.parameters(), lr=0.01)
        for _ in range(5):
            fake = generator(torch.randn(8, 2))  # back-propagated after the critic's step
            opt_c.zero_grad()
            critic(fake.detach()).mean().backward()
            opt_c.step()  # the guard stops here
            opt_g.zero_grad()
            (-critic(fake).mean()).backward()
            opt_g.step()
        """,
        max_steps=1,
    )
    assert error is None and guard.stopped
    assert guard.findings == []
