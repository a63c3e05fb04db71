"""Figures of a run: learning curves and the confusion matrix, drawn with matplotlib."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from fmnist.artifacts import atomic_write_bytes
from fmnist.history import EpochRecord


def _pyplot():
    # Imported on first use: matplotlib takes about half a second to import, and
    # the non-interactive Agg backend works without a display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def plot_history(history: Sequence[EpochRecord], path: Path, best_epoch: int | None = None) -> None:
    """Plot train and val loss, and val macro-F1, against epoch into a PNG at ``path``."""
    plt = _pyplot()
    epochs = [record.epoch for record in history]
    figure, (loss_axes, f1_axes) = plt.subplots(1, 2, figsize=(10, 4))

    loss_axes.plot(epochs, [record.train_loss for record in history], marker="o", label="train loss")
    loss_axes.plot(epochs, [record.val_loss for record in history], marker="o", label="val loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("cross-entropy loss")
    loss_axes.set_title("Loss")

    f1_axes.plot(epochs, [record.val_macro_f1 for record in history], marker="o", color="tab:green", label="val macro-F1")
    f1_axes.set_xlabel("epoch")
    f1_axes.set_ylabel("macro-F1")
    f1_axes.set_title("Validation macro-F1")

    for axes in (loss_axes, f1_axes):
        if best_epoch is not None:
            axes.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch ({best_epoch})")
        axes.grid(alpha=0.3)
        axes.legend()
    _save(figure, path)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> None:
    """Draw the confusion matrix (rows true, columns predicted) as an annotated heat map."""
    plt = _pyplot()
    size = len(class_names)
    figure, axes = plt.subplots(figsize=(8, 7))
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(size), labels=class_names, rotation=45, ha="right")
    axes.set_yticks(range(size), labels=class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix (test)")

    peak = max(max(row) for row in matrix) or 1
    for row in range(size):
        for column in range(size):
            value = matrix[row][column]
            color = "white" if value > peak / 2 else "black"
            axes.text(column, row, str(value), ha="center", va="center", color=color, fontsize=8)
    _save(figure, path)
