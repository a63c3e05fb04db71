"""The torch side of the data: a lazily read ``Dataset`` and its ``DataLoader``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class FashionMNISTDataset(Dataset):
    """Normalised, flattened images and their labels, read from memory-mapped arrays.

    ``images`` and ``labels`` are the arrays of one official split; ``indices`` selects
    the samples of this dataset (for example the train or val part of the training
    split). Pixels are scaled to [0, 1], then standardised with ``mean`` and ``std``.
    Batches are read with one fancy-indexing call (``__getitems__``), and are copies,
    so the memory map is never written.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray | None = None,
        *,
        mean: float,
        std: float,
    ) -> None:
        self.images = images
        self.labels = labels
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.mean = float(mean)
        self.std = float(std)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.__getitems__([index])
        return images[0], int(labels[0])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.indices[np.asarray(indices, dtype=np.int64)]
        # An explicit row width, because reshape cannot infer -1 for an empty batch.
        pixels = np.asarray(self.images[rows]).reshape(len(rows), math.prod(self.images.shape[1:]))
        images = torch.from_numpy(pixels).to(torch.float32)
        images.mul_(1.0 / (255.0 * self.std)).sub_(self.mean / self.std)
        labels = torch.from_numpy(np.asarray(self.labels[rows]).astype(np.int64))
        return images, labels

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return every sample as one batch."""
        return self.__getitems__(range(len(self)))


def _keep_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    # __getitems__ already returns collated tensors, so the loader passes them through.
    return batch


def make_loader(
    dataset: FashionMNISTDataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """Return a single-process ``DataLoader`` that fetches each batch with one call."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=_keep_batch,
        num_workers=0,
    )
