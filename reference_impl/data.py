"""MNIST for the reference training, read from ``<data-root>/MNIST/raw/`` without a network."""

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import datasets, transforms

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
RAW_FILE_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

ImageDataset = Dataset[tuple[torch.Tensor, int]]


class MnistFilesMissingError(RuntimeError):
    """The MNIST files are not where torchvision looks for them."""


def raw_folder(data_root: Path) -> Path:
    return data_root / "MNIST" / "raw"


def missing_raw_files(data_root: Path) -> list[str]:
    """Names of the four IDX files present neither unpacked nor as ``.gz``."""
    raw = raw_folder(data_root)
    return [
        name
        for name in RAW_FILE_NAMES
        if not (raw / name).is_file() and not (raw / f"{name}.gz").is_file()
    ]


def missing_files_message(data_root: Path, missing: list[str]) -> str:
    raw = raw_folder(data_root)
    wanted = "\n".join(f"  {raw / name}(.gz)" for name in missing)
    return (
        f"MNIST not found under {data_root}. Put the original MNIST files (gzipped or not) at:\n"
        f"{wanted}\n"
        "or pass --download to fetch them from the internet."
    )


def check_mnist_files(data_root: Path, download: bool) -> None:
    """Fail early, before any download or unpacking, when files are missing and not wanted."""
    missing = missing_raw_files(data_root)
    if missing and not download:
        raise MnistFilesMissingError(missing_files_message(data_root, missing))


def prepare_mnist(data_root: Path, download: bool) -> None:
    """Make the four unpacked IDX files exist: unpack the ``.gz`` files, or download if asked."""
    check_mnist_files(data_root, download)
    if missing_raw_files(data_root):
        # torchvision downloads, checks the md5s and unpacks all four files.
        datasets.MNIST(str(data_root), train=True, download=True)
        return
    for name in RAW_FILE_NAMES:
        unpack_if_needed(raw_folder(data_root) / name)


def unpack_if_needed(target: Path) -> None:
    # torchvision's download=False only accepts unpacked files; it does not unpack .gz itself.
    if target.is_file():
        return
    try:
        with (
            gzip.open(target.with_name(f"{target.name}.gz"), "rb") as source,
            tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial,
        ):
            shutil.copyfileobj(source, partial)
        os.chmod(partial.name, 0o644)  # NamedTemporaryFile creates it private (0600)
        # An atomic rename: a reader never sees a half-written file.
        os.replace(partial.name, target)
    except OSError as error:
        raise MnistFilesMissingError(
            f"could not unpack {target}.gz next to itself ({error}); "
            f"make {target.parent} writable or gunzip the files there yourself."
        ) from error


def mnist_datasets(
    data_root: Path, train_subset: int | None, test_subset: int | None
) -> tuple[ImageDataset, ImageDataset]:
    """The training and test sets, normalized, each cut to its first N images if asked."""
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    train_set = load_split(data_root, train=True, transform=transform, count=train_subset)
    test_set = load_split(data_root, train=False, transform=transform, count=test_subset)
    return train_set, test_set


def load_split(
    data_root: Path, train: bool, transform: transforms.Compose, count: int | None
) -> ImageDataset:
    mnist = datasets.MNIST(str(data_root), train=train, download=False, transform=transform)
    size: int = len(mnist)
    split: ImageDataset = mnist
    if count is None or count >= size:
        return split
    return Subset(split, range(count))


def make_loader(
    dataset: ImageDataset,
    batch_size: int,
    device: torch.device,
    workers: int,
    sampler: DistributedSampler[tuple[torch.Tensor, int]] | None = None,
    shuffle_seed: int | None = None,
) -> DataLoader[tuple[torch.Tensor, int]]:
    shuffle = sampler is None and shuffle_seed is not None
    generator = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        generator=generator,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
