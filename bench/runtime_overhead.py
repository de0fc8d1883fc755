"""What the runtime guard costs: steps/s of a training step with and without a Guard.

`--model reference` (default) is the reference's step (MnistCnn, Adam, CrossEntropyLoss,
AMP on CUDA); `--model mlp` a learner's tiny 2-layer MLP (784-128-10, SGD), where the guard's
fixed host cost per step shows most. Both run on synthetic batches made once on the device,
so the figure is the guard's cost on the model alone. Guarded and unguarded rounds
alternate, so drift (clocks, caches) hits both alike; the step time of each side is its
median round. On CUDA the host-device syncs of each side are
counted too (torch.cuda.set_sync_debug_mode("warn")): the guard's are its reads every K steps.

    python bench/runtime_overhead.py --device auto --steps 40 --rounds 5
    python bench/runtime_overhead.py --model mlp --steps 400 --rounds 7

It prints the host time the guard adds per step (``overhead_us_per_step``), and last
``overhead_ratio=<guarded step time / unguarded step time>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable, Iterator

import torch
from pitfall_guard.reference_impl.model import MnistCnn
from pitfall_guard.reference_impl.train import autocast_dtype, mixed_precision, select_device
from reference_throughput import synthetic_batches  # the sibling benchmark's batches
from torch import nn

from pitfall_guard.config import Config
from pitfall_guard.runtime.guard import Guard

Batch = tuple[torch.Tensor, torch.Tensor]
WARMUP_STEPS = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=64, help="the reference's default")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side, alternating")
    parser.add_argument("--check-every", type=int, default=10, help="the guard's K")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--model", choices=["reference", "mlp"], default="reference")
    return parser.parse_args()


def make_mlp_step(device: torch.device) -> Callable[[Batch], None]:
    """A learner's step: a 2-layer MLP, SGD, cross-entropy, nothing else."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def step(batch: Batch) -> None:
        images, targets = batch
        optimizer.zero_grad()
        loss_fn(model(images), targets).backward()
        optimizer.step()

    return step


def make_step(device: torch.device, amp: bool) -> Callable[[Batch], None]:
    """One training step of the reference loop (train_one_epoch), without its bookkeeping."""
    torch.manual_seed(0)
    model = MnistCnn().to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    amp_dtype = autocast_dtype(device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()

    def step(batch: Batch) -> None:
        images, targets = batch
        optimizer.zero_grad(set_to_none=True)
        with mixed_precision(device, amp_dtype):
            loss = loss_fn(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_round(
    step: Callable[[Batch], None], batches: Iterator[Batch], device: torch.device, steps: int
) -> tuple[float, int]:
    """Seconds per step over `steps` steps (after a warm-up), and the syncs they made."""
    for _ in range(WARMUP_STEPS):
        step(next(batches))
    synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        try:
            for _ in range(steps):
                step(next(batches))
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        synchronize(device)
        seconds = time.perf_counter() - start
    syncs = sum("synchroniz" in str(warning.message) for warning in caught)
    return seconds / steps, syncs


def main() -> None:
    args = parse_args()
    device = select_device(args.device, local_rank=0)
    batches = synthetic_batches(args.batch_size, device)
    if args.model == "mlp":
        plain_step, guarded_step = make_mlp_step(device), make_mlp_step(device)
    else:
        plain_step, guarded_step = make_step(device, args.amp), make_step(device, args.amp)
    plain: list[float] = []
    guarded: list[float] = []
    plain_syncs = guarded_syncs = 0
    guard = Guard(config=Config(), check_every=args.check_every)
    for _ in range(args.rounds):
        seconds, syncs = timed_round(plain_step, batches, device, args.steps)
        plain.append(seconds)
        plain_syncs += syncs
        with guard:
            seconds, syncs = timed_round(guarded_step, batches, device, args.steps)
        guarded.append(seconds)
        guarded_syncs += syncs
        assert not guard.findings, guard.findings  # the reference is clean
    plain_step_s, guarded_step_s = statistics.median(plain), statistics.median(guarded)
    total_steps = args.rounds * args.steps
    print(f"model={args.model} device={device} batch_size={args.batch_size} "
          f"threads={torch.get_num_threads()}")  # fmt: skip
    print(f"rounds={args.rounds} steps_per_round={args.steps} check_every={args.check_every}")
    print(f"unguarded_steps_per_s={1 / plain_step_s:.2f}")
    print(f"guarded_steps_per_s={1 / guarded_step_s:.2f}")
    if device.type == "cuda":
        print(f"unguarded_syncs_per_step={plain_syncs / total_steps:.3f}")
        print(f"guarded_syncs_per_step={guarded_syncs / total_steps:.3f}")
    print(f"overhead_us_per_step={(guarded_step_s - plain_step_s) * 1e6:.1f}")
    print(f"overhead_ratio={guarded_step_s / plain_step_s:.3f}")


if __name__ == "__main__":
    main()
