"""Small synthetic Fashion-MNIST files for tests: IDX writers and a learnable dataset."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from fmnist.datasets import FASHION_MNIST


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Return ``array`` encoded as an IDX file (header plus C-order payload)."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX to ``path``, gzip-compressed when the name ends in .gz."""
    data = idx_bytes(array.astype(np.uint8))
    if compress is None:
        compress = path.name.endswith(".gz")
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def make_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Return 28x28 uint8 images whose bright patch position depends on the label, plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for index, label in enumerate(labels):
        row = 2 + (label // 5) * 13
        column = 1 + (label % 5) * 5
        images[index, row : row + 11, column : column + 5] = 200 + rng.integers(0, 55)
    return images


def make_dataset(data_dir: Path, train_count: int = 400, test_count: int = 100, seed: int = 0, raw: bool = False) -> Path:
    """Write the four files of a small learnable dataset into ``data_dir`` and return it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_count), ("test", test_count)):
        labels = np.resize(np.arange(10, dtype=np.uint8), count)
        rng.shuffle(labels)
        images = make_images(labels, seed=seed + (split == "test"))
        for kind, array in (("images", images), ("labels", labels)):
            name = FASHION_MNIST.file(split, kind).name
            if raw:
                name = name.removesuffix(".gz")
            write_idx(data_dir / name, array)
    return data_dir
