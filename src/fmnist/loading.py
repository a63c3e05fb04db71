"""The torch side of the data: a lazily read ``Dataset`` and the loader of its batches."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


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
        # normalised = (pixel / 255 - mean) / std, computed as offset + pixel * scale in one pass.
        self._scale = 1.0 / (255.0 * self.std)
        self._offset = torch.tensor(-self.mean / self.std, dtype=torch.float32)
        # Plain ndarray views of the same memory, one flattened image per row: indexing a
        # numpy.memmap costs several microseconds of Python per call, and batches are small.
        # The row width is explicit because reshape cannot infer -1 for an empty array.
        self._pixel_rows = np.asarray(images).reshape(len(images), math.prod(np.shape(images)[1:]))
        self._label_array = np.asarray(labels)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.__getitems__([index])
        return images[0], int(labels[0])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.indices[np.asarray(indices, dtype=np.int64)]
        pixels = self._pixel_rows[rows]
        # Adding the uint8 pixels to a float32 scalar tensor promotes them to float32.
        images = torch.add(self._offset, torch.from_numpy(pixels), alpha=self._scale)
        labels = torch.from_numpy(self._label_array[rows].astype(np.int64))
        return images, labels

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return every sample as one batch."""
        return self.__getitems__(range(len(self)))


class BatchLoader:
    """Batches of a :class:`FashionMNISTDataset`, each read with one ``__getitems__`` call.

    It yields what a single-process ``DataLoader`` with ``batch_size`` and ``shuffle``
    would, without turning every index into a Python int: each epoch's order is one
    ``torch.randperm`` drawn from ``generator`` (the global generator when None), and
    every batch is a slice of it. docs/benchmarks.md compares its speed with two
    ``DataLoader`` set-ups.
    """

    def __init__(
        self,
        dataset: FashionMNISTDataset,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(count, generator=self.generator).numpy()
        else:
            order = np.arange(count)
        for start in range(0, count, self.batch_size):
            yield self.dataset.__getitems__(order[start : start + self.batch_size])


def make_loader(
    dataset: FashionMNISTDataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> BatchLoader:
    """Return a loader that yields ``(images, labels)`` batches, reshuffled every epoch when ``shuffle``."""
    return BatchLoader(dataset, batch_size, shuffle=shuffle, generator=generator)
