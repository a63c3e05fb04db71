"""Classify image files with a saved model, using numpy only.

Importing torch takes longer than the whole prediction of a few images, so this
module runs the MLP's forward pass in numpy from the safetensors weights. It
computes the same function as ``fmnist.model.build_model`` in eval mode (dropout
is the identity there); the tests check that both give the same probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmnist import artifacts
from fmnist.errors import CheckpointError, ConfigError, FmnistError

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class NumpyClassifier:
    """The classifier's weights as numpy arrays, with the normalisation it was trained with."""

    weights: dict[str, np.ndarray]
    mean: float
    std: float
    class_names: list[str]

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Return the logits of uint8 images shaped ``(count, 28, 28)``."""
        x = images.reshape(len(images), -1).astype(np.float32)
        x = (x / np.float32(255.0) - np.float32(self.mean)) / np.float32(self.std)
        w = self.weights
        hidden = np.maximum(x @ w["1.weight"].T + w["1.bias"], 0.0)
        hidden = np.maximum(hidden @ w["4.weight"].T + w["4.bias"], 0.0)
        return hidden @ w["7.weight"].T + w["7.bias"]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Return softmax probabilities, one row of 10 per image."""
        logits = self.logits(images)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def load_classifier(model_path: Path) -> NumpyClassifier:
    """Load the weights and metadata of a run directory into a :class:`NumpyClassifier`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_safetensors_bytes

    weights_path, metadata_path = artifacts.resolve_model_paths(model_path)
    metadata = artifacts.read_metadata(metadata_path)
    if weights_path.suffix != ".safetensors":
        raise CheckpointError(
            f"{weights_path}: predict reads safetensors weights; pass the run directory that 'fmnist train' wrote"
        )
    try:
        artifacts.check_not_special(weights_path, "model file")
        data = weights_path.read_bytes()
        if not data:
            raise CheckpointError(f"{weights_path}: model file is empty; train again or restore it from a backup")
        raw = load_safetensors_bytes(data)
    except FileNotFoundError:
        raise CheckpointError(f"{weights_path}: model file not found; pass a run directory written by 'fmnist train'") from None
    except KeyError as error:
        # safetensors.numpy raises KeyError with the dtype name for dtypes numpy lacks, such as BF16.
        dtype = error.args[0] if error.args else "unknown"
        raise CheckpointError(
            f"{weights_path}: model file contains {dtype} tensors, which predict cannot read; "
            f"save the weights as float32, as 'fmnist train' does"
        ) from None
    except (SafetensorError, ValueError, OSError) as error:
        raise CheckpointError(
            f"{weights_path}: model file is truncated or corrupt ({error}); train again or restore it from a backup"
        ) from None

    weights = {_strip_prefixes(key): value for key, value in raw.items()}
    artifacts.check_state_shapes({key: value.shape for key, value in weights.items()}, weights_path)
    artifacts.check_finite_weights(weights, weights_path)
    weights = {key: value.astype(np.float32) for key, value in weights.items()}
    normalisation = metadata["normalisation"]
    return NumpyClassifier(weights, float(normalisation["mean"]), float(normalisation["std"]), list(metadata["class_names"]))


def _strip_prefixes(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                changed = True
    return name


def predict_files(model_path: Path, paths: list[Path], *, invert: str = "auto", top_k: int = 3) -> list[dict[str, Any]]:
    """Classify each image file; a file that cannot be read gets an entry with ``error`` instead.

    Each result has ``file``, ``label``, ``class_name``, ``probability`` and ``top_k``
    (a list of ``{label, class_name, probability}``, most probable first).
    """
    from fmnist.images import INVERT_MODES, load_image

    if invert not in INVERT_MODES:
        raise ConfigError(f"--invert must be one of {', '.join(INVERT_MODES)}, got {invert!r}")
    if not 1 <= top_k <= 10:
        raise ConfigError(f"--top-k must be between 1 and 10, got {top_k}")
    classifier = load_classifier(model_path)

    results: list[dict[str, Any]] = [{"file": str(path)} for path in paths]
    images = []
    readable = []
    for position, path in enumerate(paths):
        try:
            images.append(load_image(Path(path), invert=invert))
            readable.append(position)
        except FmnistError as error:
            results[position]["error"] = str(error)
    if not images:
        return results

    with np.errstate(over="ignore", invalid="ignore"):
        probabilities = classifier.probabilities(np.stack(images))
    if not np.isfinite(probabilities).all():
        raise artifacts.non_finite_outputs_error(model_path)
    for position, row in zip(readable, probabilities):
        ranked = np.argsort(-row, kind="stable")[:top_k]
        best = int(ranked[0])
        results[position].update(
            label=best,
            class_name=classifier.class_names[best],
            probability=float(row[best]),
            top_k=[
                {"label": int(label), "class_name": classifier.class_names[label], "probability": float(row[label])}
                for label in ranked
            ],
        )
    return results
