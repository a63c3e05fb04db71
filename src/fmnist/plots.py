"""Figures of a run: learning curves and the confusion matrix, drawn with matplotlib."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from fmnist.artifacts import atomic_write_bytes, escape_surrogates
from fmnist.history import EpochRecord


def _pyplot():
    # Imported on first use: matplotlib takes about half a second to import, and
    # the non-interactive Agg backend works without a display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(figure, dpi: int = 120) -> bytes:
    """Render ``figure`` as PNG bytes and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def _save(figure, path: Path) -> None:
    atomic_write_bytes(path, figure_png(figure))


def plot_history(
    history: Sequence[EpochRecord], path: Path, best_epoch: int | None = None, label_smoothing: float = 0.0
) -> None:
    """Plot train and val loss, and val macro-F1, against epoch into a PNG at ``path``."""
    plt = _pyplot()
    epochs = [record.epoch for record in history]
    figure, (loss_axes, f1_axes) = plt.subplots(1, 2, figsize=(10, 4))

    train_losses = [record.train_loss for record in history]
    loss_axes.plot(epochs, train_losses, marker="o", label=_train_loss_label(label_smoothing))
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
    _save(confusion_matrix_figure(matrix, class_names), path)


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str]):
    """Return a figure of the confusion matrix (rows true, columns predicted) as an annotated heat map."""
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
    return figure


def _train_loss_label(label_smoothing: float) -> str:
    # With label smoothing the train loss is measured against smoothed targets, so it cannot
    # fall to 0 and does not compare with the val loss, which is always plain cross-entropy.
    return f"train loss (label smoothing {label_smoothing:g})" if label_smoothing else "train loss"


def _integer_epochs(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _mark_best_epoch(axes, best_epoch: int | None) -> None:
    if best_epoch:
        axes.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch ({best_epoch})")


def learning_curves_figure(history: Sequence[EpochRecord], best_epoch: int | None = None, label_smoothing: float = 0.0):
    """Return a figure of train and val loss, val accuracy and macro-F1, and the learning rate against epoch."""
    plt = _pyplot()
    epochs = [record.epoch for record in history]
    figure, (loss_axes, score_axes, lr_axes) = plt.subplots(1, 3, figsize=(15, 4.2))

    train_losses = [record.train_loss for record in history]
    loss_axes.plot(epochs, train_losses, marker="o", label=_train_loss_label(label_smoothing))
    loss_axes.plot(epochs, [record.val_loss for record in history], marker="o", label="val loss")
    loss_axes.set_ylabel("cross-entropy loss")
    loss_axes.set_title("Loss")

    score_axes.plot(epochs, [record.val_accuracy for record in history], marker="o", color="tab:purple", label="val accuracy")
    score_axes.plot(epochs, [record.val_macro_f1 for record in history], marker="o", color="tab:green", label="val macro-F1")
    score_axes.set_ylabel("score")
    score_axes.set_title("Validation accuracy and macro-F1")

    lr_axes.plot(epochs, [record.lr for record in history], marker="o", color="tab:red", label="learning rate")
    lr_axes.set_ylabel("learning rate at the start of the epoch")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    lr_axes.set_title("Learning rate")

    for axes in (loss_axes, score_axes, lr_axes):
        _mark_best_epoch(axes, best_epoch)
        _integer_epochs(axes)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return figure


def plot_comparison(runs: Sequence[tuple[str, Sequence[EpochRecord], int | None]], path: Path) -> None:
    """Plot the loss and val accuracy of several runs on shared axes into a PNG at ``path``.

    ``runs`` contains one ``(label, history, best_epoch)`` per run. Each run keeps one color:
    a solid line for train loss, a dashed line for val loss and a star at its best epoch.
    """
    plt = _pyplot()
    colors = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(13, 4.8))

    for index, (label, history, best_epoch) in enumerate(runs):
        # Matplotlib cannot draw the surrogate escapes of run names that are not valid UTF-8.
        label = escape_surrogates(label)
        color = colors[index % len(colors)]
        epochs = [record.epoch for record in history]
        val_losses = [record.val_loss for record in history]
        loss_axes.plot(epochs, [record.train_loss for record in history], color=color, linestyle="-")
        loss_axes.plot(epochs, val_losses, color=color, linestyle="--", label=label)
        accuracy_axes.plot(epochs, [record.val_accuracy for record in history], color=color, marker=".", label=label)
        best = next((record for record in history if record.epoch == best_epoch), None)
        if best is not None:
            loss_axes.plot([best.epoch], [best.val_loss], color=color, marker="*", markersize=12)
            accuracy_axes.plot([best.epoch], [best.val_accuracy], color=color, marker="*", markersize=12)

    loss_axes.set_title("Loss (solid: train, dashed: val, star: best epoch)")
    loss_axes.set_ylabel("cross-entropy loss")
    accuracy_axes.set_title("Validation accuracy (star: best epoch)")
    accuracy_axes.set_ylabel("val accuracy")
    for axes in (loss_axes, accuracy_axes):
        _integer_epochs(axes)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    _save(figure, path)
