"""The small CNN that the reference training fits to MNIST, and its checkpoints."""

from pathlib import Path

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class MnistCnn(nn.Module):
    """Two 3x3 convolutions, max-pooling, dropout and two linear layers; returns logits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)  # 1x28x28 -> 32x26x26
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)  # 32x26x26 -> 64x24x24
        self.pool = nn.MaxPool2d(2)  # 64x24x24 -> 64x12x12
        self.dropout1 = nn.Dropout(0.25)
        # 64 channels * 12 * 12 pixels after the pool = 9216 features per image.
        self.fc1 = nn.Linear(9216, 128)
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.dropout1(self.pool(x))
        x = torch.flatten(x, 1)
        x = self.dropout2(self.relu(self.fc1(x)))
        # Logits, not probabilities: nn.CrossEntropyLoss applies log-softmax itself.
        logits: torch.Tensor = self.fc2(x)
        return logits


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler, epoch: int
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
    }
    torch.save(state, path)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    device: torch.device,
    optimizer: Optimizer | None = None,
) -> int:
    """Restore the model (and optimizer) in place; returns the epoch the checkpoint ended."""
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    epoch: int = state["epoch"]
    return epoch
