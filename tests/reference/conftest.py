"""Fixtures for the reference training tests: MNIST from the shared folder, never downloaded."""

import os
from pathlib import Path

import pytest

RAW_FILE_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# tests/reference/conftest.py -> parents[3] is the folder that holds the repository and shared/.
DEFAULT_SHARED_RAW = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist" / "raw"


def shared_raw_folder() -> Path:
    override = os.environ.get("PITFALL_GUARD_MNIST_RAW")
    return Path(override) if override else DEFAULT_SHARED_RAW


def existing_raw_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose ``MNIST/raw/`` links to the shared MNIST files (read-only there)."""
    source = shared_raw_folder()
    found = {name: existing_raw_file(source, name) for name in RAW_FILE_NAMES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(
            f"MNIST files {missing} not found in {source}; "
            "set PITFALL_GUARD_MNIST_RAW to the folder that holds them"
        )
    root = tmp_path_factory.mktemp("mnist_root")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in found.values():
        assert path is not None
        (raw / path.name).symlink_to(path)
    return root
