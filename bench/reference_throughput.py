"""Training and evaluation throughput (images/s) of the reference MNIST CNN on this device.

Synthetic data (the default) is made once on the device, so it measures the model alone and runs
anywhere; ``--data mnist`` adds the real input pipeline. The last two lines printed are
``train_images_per_s=...`` and ``eval_images_per_s=...``.

    python bench/reference_throughput.py --device auto --batch-size 256 --steps 50
"""

import argparse
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from pitfall_guard.reference_impl.data import make_loader, mnist_datasets, prepare_mnist
from pitfall_guard.reference_impl.model import MnistCnn
from pitfall_guard.reference_impl.train import autocast_dtype, mixed_precision, select_device
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]
WARMUP_STEPS = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="timed steps, after 5 warm-up")
    parser.add_argument("--data", choices=["synthetic", "mnist"], default="synthetic")
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="for --data mnist")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    return parser.parse_args()


def synthetic_batches(batch_size: int, device: torch.device) -> Iterator[Batch]:
    # A few distinct batches, cycled, so no step reuses the previous step's exact input.
    batches = [
        (
            torch.randn(batch_size, 1, 28, 28, device=device),
            torch.randint(0, 10, (batch_size,), device=device),
        )
        for _ in range(4)
    ]
    return itertools.cycle(batches)


def mnist_batches(data_root: Path, batch_size: int, device: torch.device) -> Iterator[Batch]:
    prepare_mnist(data_root, download=False)
    train_set, _ = mnist_datasets(data_root, train_subset=None, test_subset=None)
    workers = 4 if device.type == "cuda" else 0
    loader = make_loader(train_set, batch_size, device, workers, shuffle_seed=0)
    while True:
        for images, targets in loader:
            yield images.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_images_per_s(
    model: nn.Module,
    batches: Iterator[Batch],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    steps: int,
) -> float:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    images_seen = 0
    start = time.perf_counter()
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            synchronize(device)
            start, images_seen = time.perf_counter(), 0
        images, targets = next(batches)
        optimizer.zero_grad(set_to_none=True)
        with mixed_precision(device, amp_dtype):
            loss = loss_fn(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        images_seen += images.size(0)
    synchronize(device)
    return images_seen / (time.perf_counter() - start)


def eval_images_per_s(
    model: nn.Module,
    batches: Iterator[Batch],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    steps: int,
) -> float:
    model.eval()
    images_seen = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for step in range(WARMUP_STEPS + steps):
            if step == WARMUP_STEPS:
                synchronize(device)
                start, images_seen = time.perf_counter(), 0
            images, _ = next(batches)
            with mixed_precision(device, amp_dtype):
                model(images)
            images_seen += images.size(0)
    synchronize(device)
    return images_seen / (time.perf_counter() - start)


def main() -> int:
    args = parse_args()
    device = select_device(args.device, local_rank=0)
    amp_dtype = autocast_dtype(device, args.amp)
    torch.manual_seed(0)
    if args.data == "synthetic":
        batches = synthetic_batches(args.batch_size, device)
    else:
        batches = mnist_batches(args.data_root, args.batch_size, device)
    model = MnistCnn().to(device)
    precision = "fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch.")
    print(f"device={device} data={args.data} batch_size={args.batch_size} precision={precision}")
    train_rate = train_images_per_s(model, batches, device, amp_dtype, args.steps)
    eval_rate = eval_images_per_s(model, batches, device, amp_dtype, args.steps)
    print(f"train_images_per_s={train_rate:.1f}")
    print(f"eval_images_per_s={eval_rate:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
