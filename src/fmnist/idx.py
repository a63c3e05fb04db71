"""Read and validate IDX files, the format of the MNIST family of datasets.

An IDX file starts with a 4-byte magic number: two zero bytes, a data-type code
and the number of dimensions. Each dimension follows as a big-endian uint32, then
the payload in C order. Fashion-MNIST uses only uint8 payloads (type code 0x08):
images are ``(count, 28, 28)`` and labels are ``(count,)``.

Files may be gzip-compressed (``.gz`` name) or raw. The checks here name the file,
what was expected and what was found, because a user-supplied data directory
cannot be held to the official digests.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.errors import DataFormatError

GZIP_MAGIC = b"\x1f\x8b"
UINT8_TYPE_CODE = 0x08
TYPE_NAMES = {
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
NUM_CLASSES = 10
# The largest payload accepted: Fashion-MNIST's training images take 47,040,000 bytes.
MAX_PAYLOAD_BYTES = 1 << 30
TRAILING_ALLOWANCE = 1 << 20


@dataclass(frozen=True)
class IdxHeader:
    """The parsed header of an IDX file."""

    type_code: int
    shape: tuple[int, ...]

    @property
    def header_size(self) -> int:
        return 4 + 4 * len(self.shape)

    @property
    def payload_size(self) -> int:
        size = 1
        for dim in self.shape:
            size *= dim
        return size


def read_file_bytes(path: Path) -> bytes:
    """Return the IDX bytes of ``path``, decompressing it when its name ends in ``.gz``.

    The content must match the name: a gzip stream under a raw name, or raw bytes under
    a ``.gz`` name, is rejected with the rename that fixes it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found; run 'fmnist download' or check --data-dir") from None
    except IsADirectoryError:
        raise DataFormatError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as error:
        raise DataFormatError(f"{path}: cannot be read ({error.strerror}); check its permissions") from None

    if not data:
        raise DataFormatError(f"{path}: file is empty; delete it and run 'fmnist download' again")

    is_gzip = data[:2] == GZIP_MAGIC
    named_gzip = path.name.endswith(".gz")
    if named_gzip and not is_gzip:
        raise DataFormatError(
            f"{path}: name ends in .gz but the content is not gzip-compressed; "
            f"rename it to {path.name[:-3]} if it is a raw IDX file"
        )
    if is_gzip and not named_gzip:
        raise DataFormatError(
            f"{path}: content is gzip-compressed but the name has no .gz suffix; rename it to {path.name}.gz"
        )
    if not is_gzip:
        return data

    try:
        return _decompress_bounded(data, path)
    except zlib.error as error:
        detail = "CRC check failed" if "incorrect data check" in str(error) else str(error)
        raise DataFormatError(f"{path}: gzip data is corrupt ({detail}); delete it and download it again") from None


def _decompress_bounded(data: bytes, path: Path) -> bytes:
    """Decompress gzip ``data``, never producing much more than its IDX header declares.

    A small file can expand to gigabytes (a gzip bomb), so the header is decompressed
    first and the rest only up to the declared size plus TRAILING_ALLOWANCE bytes.
    """
    decompressor = zlib.decompressobj(wbits=31)
    output = decompressor.decompress(data, 4 + 4 * 255)
    header_size = 4 + 4 * output[3] if len(output) >= 4 else 4
    if len(output) < header_size and not decompressor.eof and not decompressor.unconsumed_tail:
        raise DataFormatError(
            f"{path}: gzip stream ends early, the file is truncated; delete it and download it again"
        )
    header = parse_header(output, path)  # raises on a short or invalid header
    expected = header.header_size + header.payload_size
    if header.payload_size > MAX_PAYLOAD_BYTES:
        raise DataFormatError(
            f"{path}: header declares {header.payload_size} bytes of data, more than the "
            f"{MAX_PAYLOAD_BYTES} this reader accepts; this is not a Fashion-MNIST file"
        )
    limit = expected + TRAILING_ALLOWANCE
    output += decompressor.decompress(decompressor.unconsumed_tail, max(limit - len(output), 1))
    if len(output) >= limit or decompressor.unconsumed_tail:
        raise DataFormatError(
            f"{path}: more than {TRAILING_ALLOWANCE} bytes of data follow the {header.payload_size} bytes "
            f"that the header declares; the file is corrupt"
        )
    if not decompressor.eof:
        raise DataFormatError(
            f"{path}: gzip stream ends early, the file is truncated; delete it and download it again"
        )
    return output


def parse_header(data: bytes, path: Path) -> IdxHeader:
    """Parse and check the magic number and dimensions at the start of ``data``."""
    if len(data) < 4:
        raise DataFormatError(
            f"{path}: header is cut short: {len(data)} bytes, expected at least 4; the file is truncated"
        )
    zero1, zero2, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0 or type_code not in TYPE_NAMES:
        raise DataFormatError(
            f"{path}: invalid magic number 0x{data[:4].hex()}, expected 0x000008 followed by the number "
            f"of dimensions; this is not an IDX file"
        )
    if type_code != UINT8_TYPE_CODE:
        raise DataFormatError(
            f"{path}: data type is {TYPE_NAMES[type_code]} (code 0x{type_code:02x}), expected uint8 (0x08)"
        )
    if ndim == 0:
        raise DataFormatError(f"{path}: header declares 0 dimensions, expected 1 (labels) or 3 (images)")

    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataFormatError(
            f"{path}: header is cut short: {len(data)} bytes, expected {header_size} for {_dimensions(ndim)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    return IdxHeader(type_code, tuple(shape))


def _dimensions(count: int) -> str:
    return f"{count} dimension" if count == 1 else f"{count} dimensions"


def check_payload(header: IdxHeader, data_size: int, path: Path) -> None:
    """Check that the payload after the header has exactly the declared length."""
    payload = data_size - header.header_size
    expected = header.payload_size
    shape = "x".join(str(dim) for dim in header.shape)
    if payload < expected:
        raise DataFormatError(
            f"{path}: header declares {shape} = {expected} bytes of data but the file holds {payload}; "
            f"the file is truncated or its count is wrong"
        )
    if payload > expected:
        raise DataFormatError(
            f"{path}: {payload - expected} trailing bytes after the {expected} bytes of data that the "
            f"header ({shape}) declares; the file is corrupt"
        )


def parse_idx(data: bytes, path: Path, kind: str) -> np.ndarray:
    """Validate IDX ``data`` as ``kind`` ("images" or "labels") and return it as an array.

    The array is a read-only view of ``data``: images ``(count, 28, 28)``, labels ``(count,)``.
    """
    header = parse_header(data, path)
    expected_ndim = 3 if kind == "images" else 1
    if len(header.shape) != expected_ndim:
        raise DataFormatError(
            f"{path}: header declares {_dimensions(len(header.shape))}, expected {expected_ndim} for {kind}; "
            f"check that images and labels files are not swapped"
        )
    if kind == "images" and header.shape[1:] != (28, 28):
        height, width = header.shape[1:]
        raise DataFormatError(f"{path}: images are {height}x{width}, expected 28x28")
    check_payload(header, len(data), path)

    array = np.frombuffer(data, dtype=np.uint8, offset=header.header_size).reshape(header.shape)
    if kind == "labels":
        check_labels(array, path)
    return array


def check_labels(labels: np.ndarray, path: Path) -> None:
    """Check that every label is a class index 0-9."""
    if labels.size == 0:
        return
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        first = int(bad[0])
        raise DataFormatError(
            f"{path}: label {int(labels[first])} at index {first} is outside 0-9 "
            f"({bad.size} invalid labels in all)"
        )


def check_counts(images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path) -> None:
    """Check that an images file and its labels file hold the same number of samples."""
    if len(images) != len(labels):
        raise DataFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            f"use files from the same release"
        )


def read_idx(path: Path, kind: str) -> np.ndarray:
    """Read, decompress and validate the IDX file at ``path``."""
    return parse_idx(read_file_bytes(path), path, kind)


def read_header(path: Path) -> IdxHeader:
    """Read and check only the header of the IDX file at ``path``, gzip or raw by its name.

    A gzip file is decompressed only as far as the header, so this is cheap even for the
    training images. Raises DataFormatError when the header cannot be read or is invalid.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            start = file.read(4)
            ndim = start[3] if len(start) == 4 else 0
            data = start + file.read(4 * ndim)
    except (OSError, EOFError, zlib.error) as error:
        raise DataFormatError(
            f"{path}: failed to read the IDX header ({error}); delete the file and download it again"
        ) from None
    return parse_header(data, path)


def validate_idx_file(path: Path) -> None:
    """Raise DataFormatError unless ``path`` is a valid Fashion-MNIST IDX file.

    The kind (images or labels) is taken from the file name, as in the official release.
    """
    kind = "labels" if "labels" in path.name else "images"
    read_idx(path, kind)
