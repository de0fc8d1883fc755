"""The reference MNIST training learns, saves and restores, runs under DDP, and fails clearly
when the data is missing. Everything runs on CPU and never downloads."""

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest
import torch
import torchvision.datasets.mnist as torchvision_mnist
from pitfall_guard.reference_impl import train as reference_train
from pitfall_guard.reference_impl.model import MnistCnn, load_checkpoint, save_checkpoint
from torch.optim.lr_scheduler import StepLR

CPU_SMOKE_RUN = ["--device", "cpu", "--epochs", "1", "--batch-size", "32", "--test-subset", "200"]
METRIC_NAMES = {"test_accuracy", "test_loss", "train_images_per_s"}


def test_model_maps_28x28_images_to_ten_logits() -> None:
    logits = MnistCnn()(torch.zeros(2, 1, 28, 28))
    assert logits.shape == (2, 10)


def test_training_loss_decreases(mnist_root: Path) -> None:
    args = reference_train.parse_args(
        [
            *("--data-root", str(mnist_root), *CPU_SMOKE_RUN, "--seed", "0"),
            *("--max-steps", "40", "--train-subset", "1280"),
        ]
    )
    result = reference_train.run_training(args)
    assert len(result.step_losses) == 40
    first, last = mean(result.step_losses[:10]), mean(result.step_losses[-10:])
    assert last < 0.7 * first, result.step_losses


def test_main_writes_metrics_and_a_checkpoint_that_loads_weights_only(
    mnist_root: Path, tmp_path: Path
) -> None:
    checkpoint, metrics = tmp_path / "mnist_cnn.pt", tmp_path / "metrics.json"
    code = reference_train.main(
        [
            *("--data-root", str(mnist_root), *CPU_SMOKE_RUN, "--max-steps", "3"),
            *("--checkpoint", str(checkpoint), "--metrics-json", str(metrics)),
        ]
    )
    assert code == 0
    assert set(json.loads(metrics.read_text())) == METRIC_NAMES
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert set(state) == {"model", "optimizer", "scheduler", "epoch"}
    assert not any(name.startswith("module.") for name in state["model"])


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MnistCnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, optimizer, StepLR(optimizer, step_size=1), epoch=3)

    torch.manual_seed(1)  # a different initialization, so equal outputs prove the load
    restored = MnistCnn()
    restored_optimizer = torch.optim.Adam(restored.parameters(), lr=1e-3)
    epoch = load_checkpoint(path, restored, torch.device("cpu"), restored_optimizer)

    images = torch.randn(4, 1, 28, 28)
    model.eval()
    restored.eval()
    with torch.inference_mode():
        assert torch.equal(model(images), restored(images))
    assert epoch == 3


@pytest.mark.slow
def test_one_epoch_on_10k_images_reaches_95_percent(mnist_root: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    code = reference_train.main(
        [
            *("--data-root", str(mnist_root), "--device", "cpu", "--epochs", "1", "--seed", "1"),
            *("--train-subset", "10000", "--metrics-json", str(metrics)),
        ]
    )
    assert code == 0
    assert json.loads(metrics.read_text())["test_accuracy"] >= 0.95


@pytest.mark.slow
def test_ddp_smoke_run_on_two_cpu_processes(mnist_root: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--standalone", "-m", "pitfall_guard.reference_impl.train"]
    command += ["--data-root", str(mnist_root), *CPU_SMOKE_RUN, "--max-steps", "3"]
    command += ["--train-subset", "512", "--metrics-json", str(metrics)]
    # cwd=tmp_path: the repository root on sys.path would shadow the installed package.
    completed = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.count("epoch 1/1") == 1  # only rank 0 logs
    assert set(json.loads(metrics.read_text())) == METRIC_NAMES


def test_missing_data_names_the_files_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("the reference training tried to download MNIST")

    monkeypatch.setattr(torchvision_mnist, "download_and_extract_archive", refuse_download)
    code = reference_train.main(["--data-root", str(tmp_path), "--device", "cpu"])
    assert code == 2
    message = capsys.readouterr().err
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "--download" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_cuda_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reference_train.main(["--data-root", str(tmp_path), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
