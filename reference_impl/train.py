"""Train the reference MNIST CNN on CPU or CUDA, in one process or with DDP under torchrun.

One process: ``python -m pitfall_guard.reference_impl.train --data-root data --epochs 3``.
DDP: ``torchrun --nproc_per_node=2 -m pitfall_guard.reference_impl.train --data-root data``.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, DistributedSampler

from .data import (
    ImageDataset,
    MnistFilesMissingError,
    check_mnist_files,
    make_loader,
    mnist_datasets,
    prepare_mnist,
)
from .model import MnistCnn, save_checkpoint

PROGRESS_EVERY_STEPS = 20


class ConfigurationError(RuntimeError):
    """The command line asks for something this machine cannot do."""


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    local_rank: int
    world_size: int

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class EpochStats:
    step_losses: list[float]
    images: int
    seconds: float


@dataclass(frozen=True)
class TrainingResult:
    step_losses: list[float]
    test_loss: float
    test_accuracy: float
    train_images_per_s: float


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--download", action="store_true", help="fetch MNIST if missing")
    parser.add_argument("--epochs", type=positive_int, default=3)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--eval-batch-size", type=positive_int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gamma", type=float, default=0.7, help="StepLR decay per epoch")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    amp_help = "mixed precision on CUDA: bf16 where supported, else fp16"
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help=amp_help)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="default: 4 on CUDA, 0 on CPU")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--max-steps", type=positive_int, help="stop after N optimizer steps")
    parser.add_argument("--train-subset", type=positive_int, help="first N training images only")
    parser.add_argument("--test-subset", type=positive_int, help="first N test images only")
    parser.add_argument("--metrics-json", type=Path)
    return parser.parse_args(argv)


def distributed_context_from_env() -> DistributedContext:
    # torchrun sets these three; a plain `python -m` run is a world of one.
    return DistributedContext(
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )


def select_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError("--device cuda was asked for, but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The mixed-precision dtype, or None for full fp32 (always on CPU)."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def mixed_precision(device: torch.device, amp_dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `amp_dtype` on CUDA; a no-op context when AMP is off or on CPU."""
    return torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def barrier(device: torch.device) -> None:
    dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    max_steps: int | None,
    show_progress: bool,
) -> EpochStats:
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    # Detached losses stay on the device; reading them every step would sync host and GPU.
    step_losses: list[torch.Tensor] = []
    images_seen = 0
    start = time.perf_counter()
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with mixed_precision(device, amp_dtype):
            loss = loss_fn(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step_losses.append(loss.detach())
        images_seen += images.size(0)
        if show_progress and len(step_losses) % PROGRESS_EVERY_STEPS == 0:
            recent = torch.stack(step_losses[-PROGRESS_EVERY_STEPS:]).mean().item()
            print(f"\r  step {len(step_losses)}/{len(loader)}  loss {recent:.4f}", end="")
        if max_steps is not None and len(step_losses) >= max_steps:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if show_progress:
        print("\r\033[K", end="")  # erase the progress line before the epoch summary
    return EpochStats(torch.stack(step_losses).tolist(), images_seen, seconds)


def evaluate(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the loader."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    with torch.inference_mode():
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with mixed_precision(device, amp_dtype):
                logits = model(images)
            loss_sum += nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
            count += targets.size(0)
    return loss_sum.item() / count, correct.item() / count


def load_data(
    args: argparse.Namespace, ctx: DistributedContext, device: torch.device
) -> tuple[ImageDataset, ImageDataset]:
    # Every rank checks first, so a missing file fails all ranks instead of hanging a barrier.
    check_mnist_files(args.data_root, args.download)
    if ctx.is_main:
        prepare_mnist(args.data_root, args.download)
    if ctx.is_distributed:
        barrier(device)
    return mnist_datasets(args.data_root, args.train_subset, args.test_subset)


def fit(args: argparse.Namespace, ctx: DistributedContext, device: torch.device) -> TrainingResult:
    torch.manual_seed(args.seed)
    train_set, test_set = load_data(args, ctx, device)
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    train_sampler: DistributedSampler[tuple[torch.Tensor, int]] | None = None
    if ctx.is_distributed:
        train_sampler = DistributedSampler(
            train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=args.seed
        )
    train_loader = make_loader(
        train_set, args.batch_size, device, workers, sampler=train_sampler, shuffle_seed=args.seed
    )
    test_loader = make_loader(test_set, args.eval_batch_size, device, workers)

    model = MnistCnn().to(device)
    train_model: nn.Module = model
    if ctx.is_distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=device_ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    amp_dtype = autocast_dtype(device, args.amp)
    # Loss scaling is only needed for fp16; disabled, the scaler just calls optimizer.step().
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    progress = ctx.is_main and sys.stdout.isatty()

    step_losses: list[float] = []
    images, seconds = 0, 0.0
    test_loss, test_accuracy = float("nan"), float("nan")
    for epoch in range(1, args.epochs + 1):
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        steps_left = None if args.max_steps is None else args.max_steps - len(step_losses)
        stats = train_one_epoch(
            train_model, train_loader, optimizer, scaler, device, amp_dtype, steps_left, progress
        )
        scheduler.step()
        step_losses += stats.step_losses
        images += stats.images * ctx.world_size
        seconds += stats.seconds
        # Every rank evaluates the same unwrapped model; only rank 0 speaks and saves.
        test_loss, test_accuracy = evaluate(model, test_loader, device, amp_dtype)
        if ctx.is_main:
            train_loss = sum(stats.step_losses) / len(stats.step_losses)
            print(
                f"epoch {epoch}/{args.epochs}  train_loss {train_loss:.4f}  "
                f"test_loss {test_loss:.4f}  test_acc {test_accuracy:.2%}  "
                f"{stats.images * ctx.world_size / stats.seconds:.0f} images/s",
                flush=True,
            )
            if args.checkpoint is not None:
                save_checkpoint(args.checkpoint, model, optimizer, scheduler, epoch)
        if args.max_steps is not None and len(step_losses) >= args.max_steps:
            break
    return TrainingResult(step_losses, test_loss, test_accuracy, images / seconds)


def write_metrics(path: Path, result: TrainingResult) -> None:
    metrics = {
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "train_images_per_s": result.train_images_per_s,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")


def run_training(args: argparse.Namespace) -> TrainingResult:
    """Set up the process (group), train, and write the metrics; what `main` runs."""
    ctx = distributed_context_from_env()
    device = select_device(args.device, ctx.local_rank)
    if ctx.is_distributed:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        result = fit(args, ctx, device)
    finally:
        if ctx.is_distributed:
            dist.destroy_process_group()
    if ctx.is_main and args.metrics_json is not None:
        write_metrics(args.metrics_json, result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_training(args)
    except (ConfigurationError, MnistFilesMissingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
