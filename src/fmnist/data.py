"""Fashion-MNIST on disk: locating files, the decompressed cache, splits and batches.

Each IDX file is validated and decompressed once into a ``.npy`` cache next to the
data (or under the user cache directory when the data directory is read-only). The
cache file name carries the MD5 digest of its source, so a changed source file gets
a new cache and a stale one is never read. Samples are then read lazily through a
read-only ``numpy.memmap``, one whole batch per call.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist import idx
from fmnist.artifacts import atomic_path, check_not_special
from fmnist.download import md5_of
from fmnist.datasets import FASHION_MNIST, DataFile, DatasetSpec
from fmnist.errors import DataFormatError, DataNotFoundError, InvalidInputError

logger = logging.getLogger(__name__)

CACHE_DIR_NAME = ".fmnist-cache"


def find_data_file(data_dir: Path, data_file: DataFile) -> Path | None:
    """Return the path of ``data_file`` in ``data_dir``, gzip or raw, or None when absent."""
    gz_path = data_dir / data_file.name
    if gz_path.exists():
        return gz_path
    raw_path = data_dir / data_file.name.removesuffix(".gz")
    if raw_path.exists():
        return raw_path
    return None


def require_data_files(data_dir: Path, spec: DatasetSpec = FASHION_MNIST) -> dict[str, Path]:
    """Return the path of every file of ``spec`` in ``data_dir`` by name, or raise when one is missing."""
    found: dict[str, Path] = {}
    missing = []
    for data_file in spec.files:
        path = find_data_file(data_dir, data_file)
        if path is None:
            missing.append(data_file.name)
        else:
            found[data_file.name] = path
    if missing:
        raise DataNotFoundError(
            f"{data_dir}: missing {', '.join(missing)} (gzip or raw IDX); run 'fmnist download "
            f"--data-dir {data_dir}' or set FMNIST_DATA_DIR to a directory that holds them"
        )
    return found


def _marked_read_only(directory: Path) -> bool:
    """Return whether ``directory`` has no write permission bit at all.

    Root may write anywhere, so a write probe alone would fill a directory that its
    owner made read-only (such as a shared dataset) with cache files.
    """
    try:
        return directory.stat().st_mode & 0o222 == 0
    except OSError:
        return False


def _cache_dir_for(data_dir: Path) -> Path:
    """Return a writable cache directory: next to the data, else under the user cache."""
    local = data_dir / CACHE_DIR_NAME
    try:
        if not local.exists() and _marked_read_only(data_dir):
            raise PermissionError(f"{data_dir} has no write permission bits")
        local.mkdir(exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=local, prefix=".probe-")
        probe.close()
        return local
    except OSError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        fallback = base / "fmnist" / "idx-cache"
        try:
            fallback.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidInputError(
                f"{data_dir} is not writable and the cache directory {fallback} cannot be created "
                f"({error.strerror}); make one of them writable or set XDG_CACHE_HOME to a writable directory"
            ) from None
        logger.debug("%s is not writable; caching decompressed data in %s", data_dir, fallback)
        return fallback


def _open_cache(path: Path, kind: str, expected_shape: tuple[int, ...]) -> np.ndarray | None:
    """Open a cached array read-only, or return None when it is missing or damaged.

    ``expected_shape`` comes from the header of the source file. A cache that does not
    match it, or contains labels outside 0-9, is damaged, so the caller rebuilds it from
    the source, whose own checks then decide whether the data is valid.
    """
    if not path.exists():
        return None
    try:
        # open_memmap reads only the .npy format, so an empty, truncated or foreign file
        # raises ValueError or OSError. np.load would also raise EOFError or zipfile errors.
        array = np.lib.format.open_memmap(path, mode="r")
    except (OSError, ValueError) as error:
        logger.warning("Rebuilding damaged cache file %s (%s)", path, error)
        return None
    expected_ndim = 3 if kind == "images" else 1
    if array.dtype != np.uint8 or array.shape != expected_shape or array.ndim != expected_ndim:
        logger.warning(
            "Rebuilding cache file %s: found %s %s, expected uint8 %s",
            path, array.dtype, array.shape, expected_shape,
        )
        return None
    if kind == "images" and array.shape[1:] != (28, 28):
        # The source header itself is invalid, and rebuilding lets read_idx report it.
        return None
    if kind == "labels" and array.size and int(array.max()) >= idx.NUM_CLASSES:
        logger.warning("Rebuilding cache file %s: labels outside 0-9", path)
        return None
    return array


def _write_cache(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file through a temporary name and an atomic rename."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.save(file, np.ascontiguousarray(array))


@dataclass(frozen=True)
class SourceFile:
    """A data file as read: its path, MD5 digest and whether it is the official release."""

    path: Path
    md5: str
    official: bool


def load_cached(path: Path, kind: str, expected_md5: str, cache_dir: Path) -> tuple[np.ndarray, SourceFile]:
    """Return a read-only memory map of the IDX file at ``path``, building its cache if needed."""
    check_not_special(path, "data file", DataFormatError)
    digest = md5_of(path)
    source = SourceFile(path=path, md5=digest, official=digest == expected_md5)
    stem = path.name.removesuffix(".gz")
    cache_path = cache_dir / f"{stem}.{digest}.npy"

    # The cache was validated when it was built from a source with this digest, so
    # comparing it with the source header catches a damaged cache without decompressing.
    try:
        expected_shape = idx.read_header(path).shape
    except DataFormatError:
        expected_shape = None
    array = None if expected_shape is None else _open_cache(cache_path, kind, expected_shape)
    if array is None:
        logger.debug("Decompressing %s into %s", path, cache_path)
        _write_cache(cache_path, idx.read_idx(path, kind))
        array = np.lib.format.open_memmap(cache_path, mode="r")
    return array, source


@dataclass(frozen=True)
class SplitArrays:
    """The images and labels of one official split, memory-mapped read-only."""

    images: np.ndarray
    labels: np.ndarray
    # The images and labels IDX files, or the one CSV file that contains both.
    sources: tuple[SourceFile, ...]


def load_split(data_dir: Path, split: str, spec: DatasetSpec = FASHION_MNIST) -> SplitArrays:
    """Validate and memory-map the images and labels of ``split`` ("train" or "test").

    The split is read from Kaggle's CSV file when the directory contains both CSV files
    and not all four IDX files (see fmnist.csv_data).
    """
    from fmnist import csv_data  # csv_data imports this module

    csv_paths = csv_data.csv_files_to_use(data_dir, spec)
    if csv_paths is not None:
        return csv_data.load_csv_split(csv_paths[split], _cache_dir_for(data_dir))
    paths = require_data_files(data_dir, spec)
    cache_dir = _cache_dir_for(data_dir)
    images_file = spec.file(split, "images")
    labels_file = spec.file(split, "labels")
    images, images_source = load_cached(paths[images_file.name], "images", images_file.md5, cache_dir)
    labels, labels_source = load_cached(paths[labels_file.name], "labels", labels_file.md5, cache_dir)
    idx.check_counts(images, labels, images_source.path, labels_source.path)
    if len(labels) == 0:
        raise DataFormatError(
            f"{images_source.path} and {labels_source.path} hold no samples; use the complete {split} files"
        )

    for source in (images_source, labels_source):
        if not source.official:
            logger.info("%s is not the official release file (MD5 %s); format checks passed", source.path, source.md5)
    return SplitArrays(images=images, labels=labels, sources=(images_source, labels_source))


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and val so that each class keeps its proportion.

    Every class contributes ``round(count * val_fraction)`` samples to val and must keep
    at least one sample in train and one in val, else InvalidInputError names a fraction
    range that works for every class. Both index arrays are sorted, so the result depends
    only on ``labels``, ``val_fraction`` and ``seed``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise InvalidInputError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) == 0:
        raise InvalidInputError(
            "the training split contains 0 labels, so it cannot be split into train and val; "
            "check the train files in the data directory"
        )
    _check_val_counts(classes, counts, val_fraction)

    rng = np.random.default_rng(seed)
    train_parts = []
    val_parts = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        val_count = int(round(len(members) * val_fraction))
        shuffled = rng.permutation(members)
        val_parts.append(shuffled[:val_count])
        train_parts.append(shuffled[val_count:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def _check_val_counts(classes: np.ndarray, counts: np.ndarray, val_fraction: float) -> None:
    """Raise InvalidInputError unless ``val_fraction`` leaves every class samples in train and val."""
    smallest = int(np.argmin(counts))
    if counts[smallest] < 2:
        raise InvalidInputError(
            f"class {int(classes[smallest])} has only {int(counts[smallest])} sample; every class needs "
            f"at least one sample in train and one in val, so use a training split with at least 2 samples per class"
        )

    for label, count in zip(classes, counts):
        val_count = int(round(int(count) * val_fraction))
        if 1 <= val_count < count:
            continue
        # Any fraction in [1/m, 1 - 1/m], m the size of the smallest class, works for every class.
        low = 1 / int(counts[smallest])
        raise InvalidInputError(
            f"--val-fraction {val_fraction} gives class {int(label)} ({int(count)} samples) {val_count} val "
            f"samples; every class needs at least one sample in train and in val, so choose a fraction "
            f"between {low:.6g} and {1 - low:.6g} (the smallest class has {int(counts[smallest])} samples)"
        )


def pixel_stats(images: np.ndarray, indices: np.ndarray, chunk: int = 8192) -> tuple[float, float]:
    """Return the mean and standard deviation of the uint8 pixels of ``images[indices]``, scaled to [0, 1].

    The sums are exact integers, so images of one constant value give a standard deviation
    of exactly 0 (rejected) rather than a rounding residue that would blow up normalisation.
    """
    total = 0
    total_sq = 0
    count = 0
    for start in range(0, len(indices), chunk):
        block = np.asarray(images[indices[start : start + chunk]]).astype(np.int64)
        total += int(block.sum())
        total_sq += int(np.square(block).sum())
        count += block.size
    if count == 0:
        raise InvalidInputError("cannot compute normalisation statistics of an empty training split")
    # This is count squared times the variance, in squared pixel units. Integer
    # arithmetic keeps it exact, so it is never negative.
    scaled_variance = count * total_sq - total * total
    mean = total / (count * 255.0)
    std = math.sqrt(scaled_variance) / (count * 255.0)
    if std == 0.0:
        raise InvalidInputError("every training pixel has the same value; the images carry no information")
    return mean, std
