"""Tests of fmnist.loading: batches from __getitems__, normalisation and the seeded loader."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist import data
from fmnist.loading import FashionMNISTDataset, make_loader
from synthetic import make_images

MEAN = 0.3
STD = 0.2


def numbered_dataset(count: int = 37) -> FashionMNISTDataset:
    """A dataset whose label at position i is i, so a batch shows which samples it holds."""
    labels = np.arange(count, dtype=np.int64)
    images = make_images(labels % 10)
    return FashionMNISTDataset(images, labels, mean=MEAN, std=STD)


def epoch_labels(loader) -> list[int]:
    return [int(label) for _, labels in loader for label in labels]


def file_state(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return hashlib.md5(path.read_bytes()).hexdigest(), stat.st_mtime_ns, stat.st_size


# The dataset.


def test_getitems_shapes_and_types() -> None:
    dataset = numbered_dataset()

    images, labels = dataset.__getitems__([4, 0, 9])

    assert images.shape == (3, 784)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert labels.tolist() == [4, 0, 9]


def test_getitems_equals_stacked_getitem() -> None:
    dataset = numbered_dataset()
    positions = [5, 1, 36, 1, 20]

    images, labels = dataset.__getitems__(positions)
    singles = [dataset[position] for position in positions]

    torch.testing.assert_close(images, torch.stack([image for image, _ in singles]), rtol=0, atol=0)
    assert labels.tolist() == [label for _, label in singles]
    assert all(isinstance(label, int) for _, label in singles)


def test_getitems_empty_batch() -> None:
    images, labels = numbered_dataset().__getitems__([])

    assert images.shape == (0, 784)
    assert labels.shape == (0,)


def test_normalisation_exact() -> None:
    pixels = np.array([0, 1, 17, 128, 254, 255], dtype=np.uint8)
    images = np.resize(pixels, (2, 28, 28))
    dataset = FashionMNISTDataset(images, np.zeros(2, dtype=np.uint8), mean=MEAN, std=STD)

    normalised, _ = dataset.__getitems__([0, 1])

    expected = (images.reshape(2, -1).astype(np.float64) / 255.0 - MEAN) / STD
    torch.testing.assert_close(normalised, torch.from_numpy(expected).float(), rtol=1e-6, atol=1e-6)
    assert normalised[0, 0].item() == pytest.approx(-MEAN / STD, abs=1e-6)
    assert normalised[0, 5].item() == pytest.approx((1 - MEAN) / STD, abs=1e-6)


def test_indices_select_samples() -> None:
    labels = np.arange(20, dtype=np.int64)
    images = make_images(labels % 10)
    dataset = FashionMNISTDataset(images, labels, np.array([15, 3, 8]), mean=0.0, std=1.0)

    batch_images, batch_labels = dataset.__getitems__([0, 1, 2])

    assert len(dataset) == 3
    assert batch_labels.tolist() == [15, 3, 8]
    torch.testing.assert_close(batch_images[2], torch.from_numpy(images[8].reshape(-1) / 255.0).float())


def test_batch_is_a_copy() -> None:
    dataset = numbered_dataset()
    images_before = dataset.images.copy()
    first_images, first_labels = dataset.__getitems__([2, 3])
    expected_images = first_images.clone()

    first_images.fill_(99.0)
    first_labels.fill_(7)
    again_images, again_labels = dataset.__getitems__([2, 3])

    torch.testing.assert_close(again_images, expected_images, rtol=0, atol=0)
    assert again_labels.tolist() == [2, 3]
    np.testing.assert_array_equal(dataset.images, images_before)


def test_tensors_returns_every_sample() -> None:
    dataset = numbered_dataset(12)

    images, labels = dataset.tensors()

    assert images.shape == (12, 784)
    assert labels.tolist() == list(range(12))


# The loader.


def test_loader_one_call_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = numbered_dataset(25)
    calls = []
    original = FashionMNISTDataset.__getitems__

    def counting(self, indices):
        calls.append(len(indices))
        return original(self, indices)

    monkeypatch.setattr(FashionMNISTDataset, "__getitems__", counting)

    batches = list(make_loader(dataset, 10, shuffle=False))

    assert calls == [10, 10, 5]
    assert [images.shape for images, _ in batches] == [(10, 784), (10, 784), (5, 784)]


def test_loader_without_shuffle_keeps_order() -> None:
    loader = make_loader(numbered_dataset(), 8, shuffle=False)

    assert epoch_labels(loader) == list(range(37))


def test_loader_same_seed_same_order() -> None:
    dataset = numbered_dataset()

    first = epoch_labels(make_loader(dataset, 8, shuffle=True, generator=torch.Generator().manual_seed(11)))
    second = epoch_labels(make_loader(dataset, 8, shuffle=True, generator=torch.Generator().manual_seed(11)))
    other = epoch_labels(make_loader(dataset, 8, shuffle=True, generator=torch.Generator().manual_seed(12)))

    assert first == second
    assert first != other
    assert first != list(range(37))


def test_loader_covers_every_sample_each_epoch() -> None:
    loader = make_loader(numbered_dataset(), 8, shuffle=True, generator=torch.Generator().manual_seed(3))

    first_epoch = epoch_labels(loader)
    second_epoch = epoch_labels(loader)

    assert sorted(first_epoch) == list(range(37))
    assert sorted(second_epoch) == list(range(37))
    assert first_epoch != second_epoch


# Reading never writes.


def test_full_pass_leaves_sources_unchanged(data_dir: Path) -> None:
    sources = sorted(path for path in data_dir.iterdir() if path.is_file())
    before = {path.name: file_state(path) for path in sources}

    for split_name in ("train", "test"):
        split = data.load_split(data_dir, split_name)
        indices = np.arange(len(split.labels))
        mean, std = data.pixel_stats(split.images, indices)
        dataset = FashionMNISTDataset(split.images, split.labels, indices, mean=mean, std=std)
        loader = make_loader(dataset, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
        seen = sum(len(labels) for _, labels in loader)
        assert seen == len(split.labels)

    assert {path.name: file_state(path) for path in sources} == before


def test_loader_length_counts_partial_batch() -> None:
    loader = make_loader(numbered_dataset(37), 8, shuffle=True, generator=torch.Generator().manual_seed(0))

    assert len(loader) == 5
    assert len(list(loader)) == 5
