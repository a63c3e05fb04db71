"""The most confident mistakes on the test split, saved as ``misclassified.npz`` for the report.

The file contains the images themselves, so that ``fmnist report`` can rebuild the
report from the run directory alone. It is a NumPy ``.npz`` archive of plain arrays
and loads with ``allow_pickle=False``, so reading it runs no code.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.artifacts import atomic_write_bytes
from fmnist.errors import CheckpointError

logger = logging.getLogger(__name__)

MISCLASSIFIED_FILE = "misclassified.npz"
MISCLASSIFIED_COUNT = 36
# Arrays of the file, each with one entry per image, most confident mistake first.
# "index" is the image's position in the test split files; "probability" is the
# probability of the predicted class and "label_probability" that of the true class.
ARRAYS = ("index", "label", "prediction", "probability", "label_probability", "images")


def select_misclassified(
    labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray, count: int = MISCLASSIFIED_COUNT
) -> np.ndarray:
    """Return the positions of the ``count`` most confident mistakes, most confident first.

    Ties in confidence keep the order of the positions, so the choice is deterministic.
    """
    wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predictions))
    confidence = probabilities[wrong, predictions[wrong]]
    order = np.lexsort((wrong, -confidence))
    return wrong[order[:count]]


def misclassified_arrays(evaluation, test_set, count: int = MISCLASSIFIED_COUNT) -> dict[str, np.ndarray]:
    """Return the arrays of ``misclassified.npz`` from an evaluation with probabilities of ``test_set``."""
    if evaluation.probabilities is None:
        raise ValueError("the evaluation has no probabilities; call evaluate_model with keep_probabilities=True")
    positions = select_misclassified(evaluation.labels, evaluation.predictions, evaluation.probabilities, count)
    labels = evaluation.labels[positions].astype(np.int64)
    predictions = evaluation.predictions[positions].astype(np.int64)
    rows = test_set.indices[positions]
    return {
        "index": rows.astype(np.int64),
        "label": labels,
        "prediction": predictions,
        "probability": evaluation.probabilities[positions, predictions].astype(np.float32),
        "label_probability": evaluation.probabilities[positions, labels].astype(np.float32),
        "images": np.asarray(test_set.images[rows], dtype=np.uint8),
    }


def save_misclassified(run_dir: Path, evaluation, test_set, count: int = MISCLASSIFIED_COUNT) -> Path:
    """Write the ``count`` most confident test mistakes to ``run_dir/misclassified.npz`` and return its path."""
    arrays = misclassified_arrays(evaluation, test_set, count)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = Path(run_dir) / MISCLASSIFIED_FILE
    atomic_write_bytes(path, buffer.getvalue())
    logger.debug("Wrote %d misclassified test images to %s", len(arrays["index"]), path)
    return path


def read_misclassified(path: Path, num_classes: int = 10) -> dict[str, np.ndarray]:
    """Read ``misclassified.npz`` and check its arrays, raising CheckpointError if it is damaged."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: misclassified images not found; rebuild them with 'fmnist report RUN_DIR --data-dir DIR'") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"{path}: misclassified images cannot be read ({error}); delete the file and rebuild it with "
            f"'fmnist report RUN_DIR --data-dir DIR'"
        ) from None
    _check_arrays(path, arrays, num_classes)
    return arrays


def _check_arrays(path: Path, arrays: dict[str, Any], num_classes: int) -> None:
    fix = "delete the file and rebuild it with 'fmnist report RUN_DIR --data-dir DIR'"
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise CheckpointError(f"{path}: misclassified images have no array {', '.join(missing)}; {fix}")
    count = len(arrays["index"])
    for name in ARRAYS:
        expected = (count, 28, 28) if name == "images" else (count,)
        if arrays[name].shape != expected:
            raise CheckpointError(f"{path}: array {name} has shape {arrays[name].shape}, expected {expected}; {fix}")
    if arrays["images"].dtype != np.uint8:
        raise CheckpointError(f"{path}: array images has data type {arrays['images'].dtype}, expected uint8; {fix}")
    for name in ("label", "prediction"):
        values = arrays[name]
        if values.dtype.kind not in "iu" or (count and (values.min() < 0 or values.max() >= num_classes)):
            raise CheckpointError(f"{path}: array {name} must hold class numbers 0-{num_classes - 1}; {fix}")
    for name in ("probability", "label_probability"):
        values = arrays[name]
        if values.dtype.kind != "f" or (count and not (np.all(values >= 0) and np.all(values <= 1))):
            raise CheckpointError(f"{path}: array {name} must hold probabilities in [0, 1]; {fix}")


def compute_misclassified(run_dir: Path, data_dir: Path | None, *, offline: bool, show_progress: bool = False) -> Path:
    """Evaluate the saved model of ``run_dir`` on the test split of ``data_dir`` and save its mistakes.

    For run directories written before 'fmnist train' saved ``misclassified.npz``.
    """
    from fmnist import data, model_io, pipeline
    from fmnist.loading import FashionMNISTDataset
    from fmnist.train import evaluate_model

    model, metadata = model_io.load_model(run_dir)
    resolved = pipeline.prepare_data_dir(data_dir, offline=offline, show_progress=show_progress)
    test_split = data.load_split(resolved, "test")
    normalisation = metadata["normalisation"]
    test_set = FashionMNISTDataset(test_split.images, test_split.labels, mean=normalisation["mean"], std=normalisation["std"])
    evaluation = evaluate_model(model, test_set, keep_probabilities=True)
    logger.info("Evaluated %s on the test split of %s to find its misclassified images", run_dir, resolved)
    return save_misclassified(run_dir, evaluation, test_set)
