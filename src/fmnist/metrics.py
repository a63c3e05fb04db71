"""Classification metrics computed from labels and predictions, without scikit-learn."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Return the ``num_classes`` x ``num_classes`` count matrix: rows are true, columns predicted."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Return precision, recall, F1 and support per class from a confusion matrix.

    A class that is never predicted (or never present) gets a score of 0 where the
    ratio is undefined, as scikit-learn does with ``zero_division=0``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def summarize(labels: np.ndarray, predictions: np.ndarray, class_names: list[str] | tuple[str, ...]) -> dict:
    """Return accuracy, macro-F1, per-class scores and the confusion matrix as plain JSON types."""
    num_classes = len(class_names)
    matrix = confusion_matrix(labels, predictions, num_classes)
    scores = per_class_scores(matrix)
    total = int(matrix.sum())
    accuracy = float(np.trace(matrix) / total) if total else 0.0
    per_class = [
        {
            "class": index,
            "class_name": name,
            "precision": float(scores["precision"][index]),
            "recall": float(scores["recall"][index]),
            "f1": float(scores["f1"][index]),
            "support": int(scores["support"][index]),
        }
        for index, name in enumerate(class_names)
    ]
    return {
        "samples": total,
        "accuracy": accuracy,
        "macro_f1": float(scores["f1"].mean()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }
