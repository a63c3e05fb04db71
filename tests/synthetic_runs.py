"""Run directories made by the tests: the files 'fmnist train' writes, without training a model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from safetensors.numpy import save_file

from fmnist import metrics
from fmnist.architecture import STATE_SHAPES
from fmnist.datasets import FASHION_MNIST
from fmnist.history import EpochRecord, write_history
from fmnist.misclassified import save_misclassified

CLASS_NAMES = list(FASHION_MNIST.class_names)


def make_history(epochs: int, best_epoch: int) -> list[EpochRecord]:
    """Return a history whose val loss is lowest at ``best_epoch``."""
    history = []
    for epoch in range(1, epochs + 1):
        val_loss = 0.3 + 0.02 * abs(epoch - best_epoch)
        history.append(EpochRecord(
            epoch=epoch,
            step=epoch * 10,
            train_loss=0.6 / epoch,
            val_loss=val_loss,
            val_accuracy=0.8 + 0.01 * epoch,
            val_macro_f1=0.79 + 0.01 * epoch,
            lr=1e-3 * (1 - 0.1 * (epoch - 1)),
            seconds=1.5,
        ))
    return history


def make_predictions(test_count: int, mistakes: int, seed: int = 0) -> SimpleNamespace:
    """Return labels, predictions and probabilities of a classifier that gets ``mistakes`` images wrong.

    The i-th mistake has the i-th highest confidence, so the expected order is known.
    """
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(10), test_count).astype(np.int64)
    predictions = labels.copy()
    wrong = rng.choice(test_count, size=mistakes, replace=False)
    predictions[wrong] = (labels[wrong] + 1 + rng.integers(0, 9, size=mistakes)) % 10
    probabilities = np.full((test_count, 10), 0.01, dtype=np.float32)
    probabilities[np.arange(test_count), predictions] = 0.91
    for rank, position in enumerate(wrong):
        confidence = 0.99 - 0.5 * rank / max(mistakes, 1)
        probabilities[position] = (1 - confidence) / 9
        probabilities[position, predictions[position]] = confidence
    return SimpleNamespace(labels=labels, predictions=predictions, probabilities=probabilities, wrong=wrong)


def make_metadata(config: dict, best_epoch: int, epochs_run: int, summary: dict, class_names: list[str]) -> dict:
    """Return a ``model.json`` with the keys that 'fmnist train' writes."""
    return {
        "format_version": 1,
        "architecture": {
            "name": "mlp-784-300-200-10",
            "input_features": 784,
            "hidden_features": [300, 200],
            "num_classes": 10,
            "activation": "relu",
            "dropout": config["dropout"],
            "output": "logits",
        },
        "normalisation": {"mean": 0.286, "std": 0.353, "pixel_scale": 255.0},
        "class_names": class_names,
        "config": config,
        "seed": config["seed"],
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "stop_reason": f"reached the maximum of {config['epochs']} epochs",
        "metrics": {
            "best_val_loss": 0.3,
            "test_accuracy": summary["accuracy"],
            "test_macro_f1": summary["macro_f1"],
        },
        "data_files": [
            {"name": "train-images-idx3-ubyte.gz", "path": "/data/train-images-idx3-ubyte.gz", "md5": "a" * 32, "official": False},
            {"name": "train-labels-idx1-ubyte.gz", "path": "/data/train-labels-idx1-ubyte.gz", "md5": "b" * 32, "official": True},
            {"name": "t10k-images-idx3-ubyte.gz", "path": "/data/t10k-images-idx3-ubyte.gz", "md5": "c" * 32, "official": False},
            {"name": "t10k-labels-idx1-ubyte.gz", "path": "/data/t10k-labels-idx1-ubyte.gz", "md5": "d" * 32, "official": True},
        ],
        "split_sizes": {"train": 900, "val": 100, "test": 200},
        "software": {"fmnist": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6"},
        "created": "2026-12-04T12:00:00+00:00",
        "seconds": 75.25,
    }


def make_run_dir(
    run_dir: Path,
    *,
    epochs: int = 4,
    best_epoch: int = 3,
    test_count: int = 200,
    mistakes: int = 40,
    class_names: list[str] | None = None,
    config: dict | None = None,
    created: str | None = None,
    misclassified: bool = True,
) -> Path:
    """Write ``model.json``, random weights, ``metrics.json``, ``history.json`` and ``misclassified.npz`` of a finished run."""
    class_names = class_names or CLASS_NAMES
    run_dir.mkdir(parents=True, exist_ok=True)
    full_config = {
        "data_dir": "/data", "output_dir": str(run_dir), "offline": True, "seed": 0, "val_fraction": 0.1,
        "epochs": epochs, "batch_size": 128, "lr": 0.001, "betas": [0.9, 0.999], "weight_decay": 0.0,
        "dropout": 0.2, "lr_start_factor": 1.0, "lr_end_factor": 0.1, "patience": 5, "min_delta": 0.0,
        "threads": 2, "extra": {},
    }
    full_config.update(config or {})

    predictions = make_predictions(test_count, mistakes)
    summary = metrics.summarize(predictions.labels, predictions.predictions, class_names)
    summary["loss"] = 0.35
    metadata = make_metadata(full_config, best_epoch, epochs, summary, class_names)
    if created is not None:
        metadata["created"] = created
    (run_dir / "model.json").write_text(json.dumps(metadata, indent=2))
    (run_dir / "metrics.json").write_text(json.dumps({"split": "test", **summary}, indent=2))
    write_history(run_dir, make_history(epochs, best_epoch))
    weights_rng = np.random.default_rng(2)
    save_file(
        {key: weights_rng.normal(0.0, 0.05, size=shape).astype(np.float32) for key, shape in STATE_SHAPES.items()},
        run_dir / "model.safetensors",
    )

    if misclassified:
        rng = np.random.default_rng(1)
        test_set = SimpleNamespace(
            indices=np.arange(test_count), images=rng.integers(0, 256, size=(test_count, 28, 28), dtype=np.uint8)
        )
        save_misclassified(run_dir, predictions, test_set)
    return run_dir
