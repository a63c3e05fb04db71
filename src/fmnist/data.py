"""Fashion-MNIST on disk: locating files, the decompressed cache, splits and batches.

Each IDX file is validated and decompressed once into a ``.npy`` cache next to the
data (or under the user cache directory when the data directory is read-only). The
cache file name carries the MD5 digest of its source, so a changed source file gets
a new cache and a stale one is never read. Samples are then read lazily through a
read-only ``numpy.memmap``, one whole batch per call.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist import idx
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


def _cache_dir_for(data_dir: Path) -> Path:
    """Return a writable cache directory: next to the data, else under the user cache."""
    local = data_dir / CACHE_DIR_NAME
    try:
        local.mkdir(exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=local, prefix=".probe-")
        probe.close()
        return local
    except OSError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        fallback = base / "fmnist" / "idx-cache"
        fallback.mkdir(parents=True, exist_ok=True)
        logger.debug("%s is not writable; caching decompressed data in %s", data_dir, fallback)
        return fallback


def _open_cache(path: Path, kind: str) -> np.ndarray | None:
    """Open a cached array read-only, or return None when it is missing or damaged."""
    if not path.exists():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        logger.warning("Rebuilding damaged cache file %s (%s)", path, error)
        return None
    expected_ndim = 3 if kind == "images" else 1
    if array.dtype != np.uint8 or array.ndim != expected_ndim:
        logger.warning("Rebuilding cache file %s: unexpected dtype or shape", path)
        return None
    return array


def _write_cache(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file through a temporary name and an atomic rename."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            np.save(file, np.ascontiguousarray(array))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SourceFile:
    """A data file as read: its path, MD5 digest and whether it is the official release."""

    path: Path
    md5: str
    official: bool


def load_cached(path: Path, kind: str, expected_md5: str, cache_dir: Path) -> tuple[np.ndarray, SourceFile]:
    """Return a read-only memory map of the IDX file at ``path``, building its cache if needed."""
    digest = md5_of(path)
    source = SourceFile(path=path, md5=digest, official=digest == expected_md5)
    stem = path.name.removesuffix(".gz")
    cache_path = cache_dir / f"{stem}.{digest}.npy"

    array = _open_cache(cache_path, kind)
    if array is None:
        logger.debug("Decompressing %s into %s", path, cache_path)
        _write_cache(cache_path, idx.read_idx(path, kind))
        array = np.load(cache_path, mmap_mode="r")
    elif kind == "labels":
        idx.check_labels(np.asarray(array), path)
    if kind == "images" and array.shape[1:] != (28, 28):
        raise DataFormatError(f"{path}: images are {array.shape[1]}x{array.shape[2]}, expected 28x28")
    return array, source


@dataclass(frozen=True)
class SplitArrays:
    """The images and labels of one official split, memory-mapped read-only."""

    images: np.ndarray
    labels: np.ndarray
    sources: tuple[SourceFile, SourceFile]


def load_split(data_dir: Path, split: str, spec: DatasetSpec = FASHION_MNIST) -> SplitArrays:
    """Validate and memory-map the images and labels of ``split`` ("train" or "test")."""
    paths = require_data_files(data_dir, spec)
    cache_dir = _cache_dir_for(data_dir)
    images_file = spec.file(split, "images")
    labels_file = spec.file(split, "labels")
    images, images_source = load_cached(paths[images_file.name], "images", images_file.md5, cache_dir)
    labels, labels_source = load_cached(paths[labels_file.name], "labels", labels_file.md5, cache_dir)
    idx.check_counts(images, labels, images_source.path, labels_source.path)

    for source in (images_source, labels_source):
        if not source.official:
            logger.info("%s is not the official release file (MD5 %s); format checks passed", source.path, source.md5)
    return SplitArrays(images=images, labels=labels, sources=(images_source, labels_source))


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and val so that each class keeps its proportion.

    Every class contributes ``round(count * val_fraction)`` samples to val, at least one,
    and keeps at least one in train. Both index arrays are sorted, so the result depends
    only on ``labels``, ``val_fraction`` and ``seed``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise InvalidInputError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train_parts = []
    val_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        val_count = int(round(len(members) * val_fraction))
        if val_count < 1 or val_count >= len(members):
            raise InvalidInputError(
                f"--val-fraction {val_fraction} gives class {int(label)} ({len(members)} samples) "
                f"{val_count} val samples; every class needs at least one sample in train and in val, "
                f"so choose a fraction between {1 / len(members):.3g} and {1 - 1 / len(members):.3g}"
            )
        shuffled = rng.permutation(members)
        val_parts.append(shuffled[:val_count])
        train_parts.append(shuffled[val_count:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def pixel_stats(images: np.ndarray, indices: np.ndarray, chunk: int = 8192) -> tuple[float, float]:
    """Return the mean and standard deviation of the pixels of ``images[indices]``, scaled to [0, 1]."""
    total = 0.0
    total_sq = 0.0
    count = 0
    for start in range(0, len(indices), chunk):
        block = np.asarray(images[indices[start : start + chunk]], dtype=np.float64) / 255.0
        total += block.sum()
        total_sq += np.square(block).sum()
        count += block.size
    if count == 0:
        raise InvalidInputError("cannot compute normalisation statistics of an empty training split")
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    if std == 0.0:
        raise InvalidInputError("every training pixel has the same value; the images carry no information")
    return float(mean), std
