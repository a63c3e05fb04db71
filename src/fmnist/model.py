"""The classifier: a multilayer perceptron that maps 28x28 images to 10 logits."""

from __future__ import annotations

import torch
from torch import nn

from fmnist.architecture import ARCHITECTURE, HIDDEN_FEATURES, INPUT_FEATURES, NUM_CLASSES

__all__ = ["ARCHITECTURE", "HIDDEN_FEATURES", "INPUT_FEATURES", "NUM_CLASSES", "build_model", "probabilities"]


def build_model(dropout: float = 0.2) -> nn.Sequential:
    """Return the MLP 784 -> 300 -> ReLU -> Dropout -> 200 -> ReLU -> Dropout -> 10.

    The model returns logits. ``CrossEntropyLoss`` applies log-softmax itself, so a
    Softmax layer here would apply it twice; probabilities are computed only at
    inference, by :func:`probabilities`.
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(INPUT_FEATURES, HIDDEN_FEATURES[0]),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(HIDDEN_FEATURES[0], HIDDEN_FEATURES[1]),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(HIDDEN_FEATURES[1], NUM_CLASSES),
    )


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Return the class probabilities (softmax over the last dimension) of ``logits``."""
    return torch.softmax(logits, dim=-1)
