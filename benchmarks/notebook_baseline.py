"""The notebook recipe that fmnist is measured against, written the way notebooks usually write it.

A per-sample ``Dataset`` whose ``__getitem__`` reads one image from the memory-mapped
array and returns a normalised float tensor and an int label, a ``DataLoader`` at batch
size 64, Adam at 1e-3, a LinearLR stepped once per epoch (factor 1.0 to 0.1 over 30
epochs), dropout 0.2, early stopping on val loss with patience 5, a stratified 10% val
split. It shares the data files, the split, the normalisation and the model with fmnist,
so that only the data path and the recipe differ.

Run as a script, it trains to early stopping, saves the model and prints a JSON summary:

    python benchmarks/notebook_baseline.py --data-dir ../shared/data/fashion-mnist --output-dir /tmp/notebook
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

BATCH_SIZE = 64
LR = 1e-3
EPOCHS = 30
PATIENCE = 5
DROPOUT = 0.2
VAL_FRACTION = 0.1


class NotebookDataset(Dataset):
    """One sample per ``__getitem__`` call: a normalised 784-float tensor and an int label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, mean: float, std: float) -> None:
        self.images = images
        self.labels = labels
        self.indices = indices
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.indices[index]
        image = np.asarray(self.images[row], dtype=np.float32) / 255.0
        image = (image - self.mean) / self.std
        return torch.tensor(image.reshape(-1)), int(self.labels[row])


def notebook_datasets(data_dir: Path, seed: int) -> tuple[NotebookDataset, NotebookDataset, NotebookDataset]:
    """Return the train, val and test datasets, split and normalised as fmnist does."""
    from fmnist import data

    train_split = data.load_split(data_dir, "train")
    test_split = data.load_split(data_dir, "test")
    train_indices, val_indices = data.stratified_split(train_split.labels, VAL_FRACTION, seed)
    mean, std = data.pixel_stats(train_split.images, train_indices)
    return (
        NotebookDataset(train_split.images, train_split.labels, train_indices, mean, std),
        NotebookDataset(train_split.images, train_split.labels, val_indices, mean, std),
        NotebookDataset(test_split.images, test_split.labels, np.arange(len(test_split.labels)), mean, std),
    )


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    """Run one epoch of Adam steps over ``loader`` and return the mean train loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total = 0.0
    count = 0
    for images, labels in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / count


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Return the mean cross-entropy loss and the accuracy of ``model`` over ``loader``."""
    model.eval()
    total = 0.0
    correct = 0
    count = 0
    for images, labels in loader:
        logits = model(images)
        total += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == labels).sum())
        count += len(labels)
    return total / count, correct / count


def train_to_early_stopping(data_dir: Path, output_dir: Path, seed: int = 0, max_epochs: int = EPOCHS) -> dict:
    """Train the notebook recipe until patience runs out (or ``max_epochs``), save the best model, return a summary."""
    from fmnist.model import build_model

    train_set, val_set, test_set = notebook_datasets(data_dir, seed)
    torch.manual_seed(seed)
    model = build_model(DROPOUT)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.1, total_iters=EPOCHS)
    train_loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=BATCH_SIZE)
    test_loader = DataLoader(test_set, batch_size=BATCH_SIZE)

    best_loss = math.inf
    best_epoch = 0
    best_state = copy.deepcopy(model.state_dict())
    epoch_seconds = []
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        train_one_epoch(model, train_loader, optimizer)
        scheduler.step()
        val_loss, _ = evaluate(model, val_loader)
        epoch_seconds.append(time.perf_counter() - started)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= PATIENCE:
            break

    model.load_state_dict(best_state)
    _, test_accuracy = evaluate(model, test_loader)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), output_dir / "model.pt")
    return {
        "test_accuracy": test_accuracy,
        "best_epoch": best_epoch,
        "epochs_run": len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "model_path": str(output_dir / "model.pt"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the notebook baseline recipe and print a JSON summary.")
    parser.add_argument("--data-dir", type=Path, required=True, help="directory holding the four IDX files")
    parser.add_argument("--output-dir", type=Path, required=True, help="directory to save model.pt into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and shuffling (default: 0)")
    parser.add_argument("--max-epochs", type=int, default=EPOCHS, help=f"stop after this many epochs at the latest (default: {EPOCHS})")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: every CPU available)")
    args = parser.parse_args(argv)

    from fmnist.pipeline import set_threads

    set_threads(args.threads)
    summary = train_to_early_stopping(args.data_dir, args.output_dir, args.seed, args.max_epochs)
    json.dump(summary, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
