"""Tests of fmnist.data: finding files, the .npy cache, load_split, stratified_split, pixel_stats."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest

from fmnist import data, idx
from fmnist.datasets import FASHION_MNIST
from fmnist.download import md5_of
from fmnist.errors import DataFormatError, DataNotFoundError, InvalidInputError
from synthetic import make_dataset, make_images, write_idx

TRAIN_IMAGES = FASHION_MNIST.file("train", "images").name
TRAIN_LABELS = FASHION_MNIST.file("train", "labels").name


def write_split(data_dir: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    for kind, array in (("images", images), ("labels", labels)):
        write_idx(data_dir / FASHION_MNIST.file(split, kind).name, array)


def small_labels(count: int, seed: int = 0) -> np.ndarray:
    labels = np.resize(np.arange(10, dtype=np.uint8), count)
    np.random.default_rng(seed).shuffle(labels)
    return labels


@pytest.fixture
def known_dir(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A dataset directory whose train split contains known arrays."""
    data_dir = make_dataset(tmp_path / "known", train_count=30, test_count=20)
    labels = small_labels(30, seed=5)
    images = make_images(labels, seed=5)
    write_split(data_dir, "train", images, labels)
    return data_dir, images, labels


def cache_path(data_dir: Path, name: str) -> Path:
    return data_dir / data.CACHE_DIR_NAME / f"{name.removesuffix('.gz')}.{md5_of(data_dir / name)}.npy"


def count_read_idx(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace idx.read_idx with a wrapper that records the name of every file it decompresses."""
    calls: list[str] = []
    original = idx.read_idx

    def counting(path: Path, kind: str) -> np.ndarray:
        calls.append(path.name)
        return original(path, kind)

    monkeypatch.setattr(idx, "read_idx", counting)
    return calls


def format_error(data_dir: Path, split: str = "train") -> DataFormatError:
    with pytest.raises(DataFormatError) as caught:
        data.load_split(data_dir, split)
    assert caught.value.exit_code == 2
    return caught.value


# Finding files.


def test_find_data_file_prefers_gzip(data_dir: Path) -> None:
    train_images = FASHION_MNIST.file("train", "images")
    write_idx(data_dir / TRAIN_IMAGES.removesuffix(".gz"), np.zeros((1, 28, 28), dtype=np.uint8))

    assert data.find_data_file(data_dir, train_images) == data_dir / TRAIN_IMAGES


def test_find_data_file_falls_back_to_raw(tmp_path: Path) -> None:
    make_dataset(tmp_path, train_count=20, test_count=10, raw=True)

    found = data.find_data_file(tmp_path, FASHION_MNIST.file("train", "images"))

    assert found == tmp_path / "train-images-idx3-ubyte"


def test_find_data_file_absent(tmp_path: Path) -> None:
    assert data.find_data_file(tmp_path, FASHION_MNIST.file("test", "labels")) is None


def test_missing_file_message(data_dir: Path) -> None:
    (data_dir / TRAIN_LABELS).unlink()

    with pytest.raises(DataNotFoundError) as caught:
        data.load_split(data_dir, "test")

    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"{data_dir}: missing train-labels-idx1-ubyte.gz (gzip or raw IDX); run 'fmnist download "
        f"--data-dir {data_dir}' or set FMNIST_DATA_DIR to a directory that holds them"
    )


# load_split on valid data.


def test_load_split_returns_known_arrays(known_dir: tuple[Path, np.ndarray, np.ndarray]) -> None:
    data_dir, images, labels = known_dir

    split = data.load_split(data_dir, "train")

    assert split.images.shape == (30, 28, 28)
    assert split.images.dtype == np.uint8
    assert split.labels.dtype == np.uint8
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)
    assert [source.path for source in split.sources] == [data_dir / TRAIN_IMAGES, data_dir / TRAIN_LABELS]
    assert split.sources[0].md5 == md5_of(data_dir / TRAIN_IMAGES)


def test_load_split_test_split(data_dir: Path) -> None:
    split = data.load_split(data_dir, "test")

    assert split.images.shape == (100, 28, 28)
    assert split.labels.shape == (100,)
    assert split.sources[0].path.name == "t10k-images-idx3-ubyte.gz"


def test_raw_dataset_equals_gzip_dataset(tmp_path: Path) -> None:
    gzip_dir = make_dataset(tmp_path / "gzip", seed=3)
    raw_dir = make_dataset(tmp_path / "raw", seed=3, raw=True)

    for split in ("train", "test"):
        from_gzip = data.load_split(gzip_dir, split)
        from_raw = data.load_split(raw_dir, split)

        assert from_raw.sources[0].path.suffix != ".gz"
        np.testing.assert_array_equal(from_raw.images, from_gzip.images)
        np.testing.assert_array_equal(from_raw.labels, from_gzip.labels)


def test_memory_map_is_read_only(data_dir: Path) -> None:
    split = data.load_split(data_dir, "train")

    assert isinstance(split.images, np.memmap)
    with pytest.raises(ValueError, match="read-only"):
        split.images[0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        split.labels[0] = 1


def test_synthetic_files_not_official(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fmnist.data")

    split = data.load_split(data_dir, "train")

    assert [source.official for source in split.sources] == [False, False]
    expected = [
        f"{source.path} is not the official release file (MD5 {source.md5}); format checks passed"
        for source in split.sources
    ]
    messages = [record.getMessage() for record in caplog.records if "official" in record.getMessage()]
    assert messages == expected


def test_matching_digest_is_official(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A spec whose digests are those of the synthetic files makes them "official".
    files = tuple(
        dataclasses.replace(data_file, md5=md5_of(data_dir / data_file.name)) for data_file in FASHION_MNIST.files
    )
    spec = dataclasses.replace(FASHION_MNIST, files=files)
    caplog.set_level(logging.INFO, logger="fmnist.data")

    split = data.load_split(data_dir, "train", spec)

    assert [source.official for source in split.sources] == [True, True]
    assert not [record for record in caplog.records if "official" in record.getMessage()]


# load_split on invalid data: each error names the source file.


def test_image_and_label_counts_differ(data_dir: Path) -> None:
    labels = small_labels(12)
    write_idx(data_dir / TRAIN_IMAGES, make_images(labels))
    write_idx(data_dir / TRAIN_LABELS, labels[:10])

    error = format_error(data_dir)

    assert str(error) == (
        f"{data_dir / TRAIN_IMAGES} holds 12 images but {data_dir / TRAIN_LABELS} holds 10 labels; "
        f"use files from the same release"
    )


def test_label_outside_classes_in_split(data_dir: Path) -> None:
    labels = small_labels(400)
    labels[7] = 11
    write_idx(data_dir / TRAIN_LABELS, labels)

    error = format_error(data_dir)

    assert str(error) == f"{data_dir / TRAIN_LABELS}: label 11 at index 7 is outside 0-9 (1 invalid labels in all)"


def test_images_not_28x28_in_split(data_dir: Path) -> None:
    write_idx(data_dir / TRAIN_IMAGES, np.zeros((400, 28, 27), dtype=np.uint8))

    error = format_error(data_dir)

    assert str(error) == f"{data_dir / TRAIN_IMAGES}: images are 28x27, expected 28x28"


def test_swapped_images_and_labels(data_dir: Path) -> None:
    labels = small_labels(400)
    write_idx(data_dir / TRAIN_IMAGES, labels)
    write_idx(data_dir / TRAIN_LABELS, make_images(labels))

    error = format_error(data_dir)

    assert str(error) == (
        f"{data_dir / TRAIN_IMAGES}: header declares 1 dimension, expected 3 for images; "
        f"check that images and labels files are not swapped"
    )


def test_invalid_file_leaves_no_cache(data_dir: Path) -> None:
    (data_dir / TRAIN_LABELS).write_bytes(b"")

    with pytest.raises(DataFormatError, match=re.escape("file is empty")):
        data.load_split(data_dir, "train")

    assert not list((data_dir / data.CACHE_DIR_NAME).glob("train-labels*"))


# The decompressed cache.


def test_cache_built_once(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_read_idx(monkeypatch)

    first = data.load_split(data_dir, "train")
    cache_file = cache_path(data_dir, TRAIN_IMAGES)
    built_at = cache_file.stat().st_mtime_ns
    second = data.load_split(data_dir, "train")

    assert calls == [TRAIN_IMAGES, TRAIN_LABELS]
    assert cache_file.stat().st_mtime_ns == built_at
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(np.load(cache_file), idx.read_idx(data_dir / TRAIN_IMAGES, "images"))


def test_cache_has_no_leftover_temporary_files(data_dir: Path) -> None:
    data.load_split(data_dir, "train")
    data.load_split(data_dir, "test")

    names = sorted(path.name for path in (data_dir / data.CACHE_DIR_NAME).iterdir())

    assert len(names) == 4
    assert all(name.endswith(".npy") and not name.startswith(".") for name in names)


def test_cache_rebuilt_when_truncated(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    expected = data.load_split(data_dir, "train").images.copy()
    cache_file = cache_path(data_dir, TRAIN_IMAGES)
    os.truncate(cache_file, cache_file.stat().st_size // 2)
    calls = count_read_idx(monkeypatch)

    images = data.load_split(data_dir, "train").images

    assert calls == [TRAIN_IMAGES]
    np.testing.assert_array_equal(images, expected)
    assert cache_file.stat().st_size > 28 * 28 * 400
    assert any("Rebuilding damaged cache file" in record.getMessage() for record in caplog.records)


BAD_CACHES = {
    "empty": lambda path, good: path.write_bytes(b""),
    "header-cut": lambda path, good: path.write_bytes(path.read_bytes()[:20]),
    "not-npy": lambda path, good: path.write_bytes(b"PK\x03\x04 not a numpy file"),
    "float32": lambda path, good: np.save(path, good.astype(np.float32)),
    "27x27": lambda path, good: np.save(path, good[:, :27, :27].copy()),
    "fewer-images": lambda path, good: np.save(path, good[:-1].copy()),
    "flat": lambda path, good: np.save(path, good.reshape(len(good), -1)),
}


@pytest.mark.parametrize("damage", BAD_CACHES.values(), ids=BAD_CACHES.keys())
def test_damaged_images_cache_rebuilt(data_dir: Path, monkeypatch: pytest.MonkeyPatch, damage) -> None:
    expected = np.array(data.load_split(data_dir, "train").images)
    damage(cache_path(data_dir, TRAIN_IMAGES), expected)
    calls = count_read_idx(monkeypatch)

    images = data.load_split(data_dir, "train").images

    assert calls == [TRAIN_IMAGES]
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected)


def test_labels_cache_outside_classes_rebuilt(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = np.array(data.load_split(data_dir, "train").labels)
    corrupt = expected.copy()
    corrupt[3] = 200
    np.save(cache_path(data_dir, TRAIN_LABELS), corrupt)
    calls = count_read_idx(monkeypatch)

    labels = data.load_split(data_dir, "train").labels

    assert calls == [TRAIN_LABELS]
    np.testing.assert_array_equal(labels, expected)


def test_cache_rebuilt_when_source_changes(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data.load_split(data_dir, "train")
    old_cache = cache_path(data_dir, TRAIN_LABELS)
    new_labels = (np.array(data.load_split(data_dir, "train").labels) + 1) % 10
    write_idx(data_dir / TRAIN_LABELS, new_labels)
    new_cache = cache_path(data_dir, TRAIN_LABELS)
    calls = count_read_idx(monkeypatch)

    labels = data.load_split(data_dir, "train").labels

    assert new_cache != old_cache
    assert calls == [TRAIN_LABELS]
    assert new_cache.exists()
    np.testing.assert_array_equal(labels, new_labels)


def test_cache_fallback_read_only_dir(data_dir: Path, tmp_path: Path) -> None:
    # Without write bits the directory counts as read-only, even for root, who could write to it.
    data_dir.chmod(0o555)
    try:
        split = data.load_split(data_dir, "train")
    finally:
        data_dir.chmod(0o755)

    fallback = tmp_path / "xdg-cache" / "fmnist" / "idx-cache"
    assert not (data_dir / data.CACHE_DIR_NAME).exists()
    assert sorted(path.name.split(".")[0] for path in fallback.iterdir()) == [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    assert split.images.shape == (400, 28, 28)


def test_cache_fallback_cache_dir_is_file(data_dir: Path, tmp_path: Path) -> None:
    # A file in place of the cache directory fails like a read-only data directory, even for root.
    (data_dir / data.CACHE_DIR_NAME).write_bytes(b"")

    split = data.load_split(data_dir, "train")

    fallback = tmp_path / "xdg-cache" / "fmnist" / "idx-cache"
    assert len(list(fallback.glob("*.npy"))) == 2
    assert Path(split.images.filename).parent == fallback


def test_cache_fallback_not_creatable(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (data_dir / data.CACHE_DIR_NAME).write_bytes(b"")
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_bytes(b"")
    monkeypatch.setenv("XDG_CACHE_HOME", str(not_a_dir))

    with pytest.raises(InvalidInputError) as caught:
        data.load_split(data_dir, "train")

    assert str(caught.value) == (
        f"{data_dir} is not writable and the cache directory {not_a_dir / 'fmnist' / 'idx-cache'} cannot be "
        f"created (Not a directory); make one of them writable or set XDG_CACHE_HOME to a writable directory"
    )


# stratified_split.


def labels_with_counts(counts: list[int], seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(len(counts), dtype=np.uint8), counts)
    np.random.default_rng(seed).shuffle(labels)
    return labels


UNEVEN_COUNTS = [20, 20, 4]


def test_stratified_split_covers_all_disjoint() -> None:
    labels = labels_with_counts([31, 17, 58, 9, 40, 12, 25, 33, 21, 14])

    train, val = data.stratified_split(labels, 0.2, seed=1)

    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0)
    assert np.all(np.diff(val) > 0)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9])
def test_stratified_split_keeps_proportions(fraction: float) -> None:
    counts = [31, 17, 58, 10, 40, 12, 25, 33, 21, 14]
    labels = labels_with_counts(counts)

    train, val = data.stratified_split(labels, fraction, seed=4)

    for label, count in enumerate(counts):
        val_count = int(np.sum(labels[val] == label))
        assert abs(val_count - round(count * fraction)) <= 1
        assert int(np.sum(labels[train] == label)) == count - val_count


def test_stratified_split_deterministic_for_seed() -> None:
    labels = labels_with_counts([30] * 10)

    first = data.stratified_split(labels, 0.2, seed=7)
    second = data.stratified_split(labels, 0.2, seed=7)
    other = data.stratified_split(labels, 0.2, seed=8)

    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_stratified_split_rejects_fraction_outside(fraction: float) -> None:
    with pytest.raises(InvalidInputError) as caught:
        data.stratified_split(labels_with_counts(UNEVEN_COUNTS), fraction, seed=0)

    assert str(caught.value) == f"--val-fraction must be between 0 and 1 (exclusive), got {fraction}"


def test_stratified_split_class_without_val() -> None:
    with pytest.raises(InvalidInputError) as caught:
        data.stratified_split(labels_with_counts(UNEVEN_COUNTS), 0.02, seed=0)

    assert str(caught.value) == (
        "--val-fraction 0.02 gives class 0 (20 samples) 0 val samples; every class needs at least one sample "
        "in train and in val, so choose a fraction between 0.25 and 0.75 (the smallest class has 4 samples)"
    )


def test_stratified_split_class_without_train() -> None:
    with pytest.raises(InvalidInputError) as caught:
        data.stratified_split(labels_with_counts(UNEVEN_COUNTS), 0.9, seed=0)

    assert str(caught.value) == (
        "--val-fraction 0.9 gives class 2 (4 samples) 4 val samples; every class needs at least one sample "
        "in train and in val, so choose a fraction between 0.25 and 0.75 (the smallest class has 4 samples)"
    )


@pytest.mark.parametrize("fraction", [0.25, 0.75])
def test_stratified_split_suggested_range_works(fraction: float) -> None:
    labels = labels_with_counts(UNEVEN_COUNTS)

    train, val = data.stratified_split(labels, fraction, seed=0)

    for label in range(len(UNEVEN_COUNTS)):
        assert np.any(labels[train] == label)
        assert np.any(labels[val] == label)


def test_stratified_split_class_of_one() -> None:
    with pytest.raises(InvalidInputError) as caught:
        data.stratified_split(labels_with_counts([5, 1, 5]), 0.2, seed=0)

    assert str(caught.value) == (
        "class 1 has only 1 sample; every class needs at least one sample in train and one in val, "
        "so use a training split with at least 2 samples per class"
    )


def test_stratified_split_empty_labels() -> None:
    with pytest.raises(InvalidInputError) as caught:
        data.stratified_split(np.array([], dtype=np.uint8), 0.1, seed=0)

    assert str(caught.value) == (
        "the training split contains 0 labels, so it cannot be split into train and val; "
        "check the train files in the data directory"
    )


# pixel_stats.


def test_pixel_stats_matches_numpy() -> None:
    images = np.random.default_rng(2).integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    indices = np.sort(np.random.default_rng(3).choice(50, size=23, replace=False))

    mean, std = data.pixel_stats(images, indices, chunk=7)

    selected = images[indices].astype(np.float64) / 255.0
    assert mean == pytest.approx(selected.mean(), rel=1e-12)
    assert std == pytest.approx(selected.std(), rel=1e-12)
    assert isinstance(mean, float)
    assert isinstance(std, float)


def test_pixel_stats_uses_only_selected_rows() -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[0] = 255
    images[1, :14] = 255

    mean, std = data.pixel_stats(images, np.array([1, 2]))

    assert mean == pytest.approx(0.25)
    assert std == pytest.approx(np.sqrt(0.25 * 0.75))


def test_pixel_stats_one_pixel_differs() -> None:
    images = np.full((3, 28, 28), 37, dtype=np.uint8)
    images[2, 5, 5] = 38

    mean, std = data.pixel_stats(images, np.arange(3))

    selected = images.astype(np.float64) / 255.0
    assert std == pytest.approx(selected.std(), rel=1e-9)
    assert mean == pytest.approx(selected.mean(), rel=1e-12)


def test_pixel_stats_rejects_empty_selection() -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)

    with pytest.raises(InvalidInputError) as caught:
        data.pixel_stats(images, np.array([], dtype=np.int64))

    assert str(caught.value) == "cannot compute normalisation statistics of an empty training split"


@pytest.mark.parametrize("value", [0, 37, 255])
def test_pixel_stats_rejects_constant_images(value: int) -> None:
    # 37 / 255 is not exact in binary, so float sums leave a tiny nonzero variance.
    images = np.full((40, 28, 28), value, dtype=np.uint8)

    with pytest.raises(InvalidInputError) as caught:
        data.pixel_stats(images, np.arange(40))

    assert str(caught.value) == "every training pixel has the same value; the images carry no information"


# The real files, when this checkout has them.


@pytest.mark.real_data
def test_real_data_splits(real_data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fmnist.data")

    train = data.load_split(real_data_dir, "train")
    test = data.load_split(real_data_dir, "test")

    assert train.images.shape == (60000, 28, 28)
    assert test.images.shape == (10000, 28, 28)
    assert train.labels.shape == (60000,)
    assert test.labels.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), [1000] * 10)

    for split in (train, test):
        images_source, labels_source = split.sources
        assert not images_source.official
        assert labels_source.official
        assert labels_source.md5 == FASHION_MNIST.file(
            "train" if split is train else "test", "labels"
        ).md5
    logged = [record.getMessage() for record in caplog.records if "official" in record.getMessage()]
    assert len(logged) == 2
    assert all("images-idx3-ubyte.gz is not the official release file" in message for message in logged)
