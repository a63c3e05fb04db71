"""Tests of fmnist.idx: IDX parsing, the checks behind every format error, and fuzzing."""

from __future__ import annotations

import gzip
import re
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmnist import idx
from fmnist.errors import DataFormatError
from synthetic import idx_bytes, make_images, write_idx

LABELS = np.array([3, 0, 9, 1, 1, 7], dtype=np.uint8)
IMAGES = make_images(LABELS)

FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def header(type_code: int, *dims: int) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def read_error(path: Path, kind: str) -> str:
    with pytest.raises(DataFormatError) as caught:
        idx.read_idx(path, kind)
    assert caught.value.exit_code == 2
    return str(caught.value)


# Valid files.


def test_read_idx_raw_labels(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", LABELS)

    labels = idx.read_idx(path, "labels")

    np.testing.assert_array_equal(labels, LABELS)
    assert labels.dtype == np.uint8


def test_read_idx_gzip_equals_raw(tmp_path: Path) -> None:
    raw = write_idx(tmp_path / "train-images-idx3-ubyte", IMAGES)
    compressed = write_idx(tmp_path / "train-images-idx3-ubyte.gz", IMAGES)

    from_raw = idx.read_idx(raw, "images")
    from_gzip = idx.read_idx(compressed, "images")

    assert from_raw.shape == (6, 28, 28)
    np.testing.assert_array_equal(from_raw, IMAGES)
    np.testing.assert_array_equal(from_gzip, from_raw)


def test_parse_idx_returns_read_only_array() -> None:
    labels = idx.parse_idx(idx_bytes(LABELS), Path("labels"), "labels")

    with pytest.raises(ValueError):
        labels[0] = 5


def test_parse_idx_accepts_zero_samples() -> None:
    images = idx.parse_idx(header(0x08, 0, 28, 28), Path("images"), "images")

    assert images.shape == (0, 28, 28)


def test_read_header_reads_gzip_prefix(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", IMAGES)

    parsed = idx.read_header(path)

    assert parsed == idx.IdxHeader(type_code=0x08, shape=(6, 28, 28))
    assert parsed.header_size == 16
    assert parsed.payload_size == 6 * 28 * 28


def test_read_header_raw_under_gz_name(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", LABELS, compress=False)

    with pytest.raises(DataFormatError, match=re.escape(f"{path}: failed to read the IDX header (")):
        idx.read_header(path)


def test_validate_kind_from_name(tmp_path: Path) -> None:
    labels_path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", LABELS)
    # An images payload under a labels name must be read as labels, and fail as such.
    swapped = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", IMAGES)

    idx.validate_idx_file(labels_path)
    with pytest.raises(DataFormatError, match="expected 1 for labels"):
        idx.validate_idx_file(swapped)


# One test per user-visible format error, each with its exact message.


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"

    message = read_error(path, "labels")

    assert message == f"{path}: file not found; run 'fmnist download' or check --data-dir"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.mkdir()

    message = read_error(path, "labels")

    assert message == f"{path}: is a directory, expected an IDX file"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"")

    message = read_error(path, "labels")

    assert message == f"{path}: file is empty; delete it and run 'fmnist download' again"


def test_magic_cut_short_raw(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08")

    message = read_error(path, "labels")

    assert message == f"{path}: header is cut short: 3 bytes, expected at least 4; the file is truncated"


def test_dimensions_cut_short_raw(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(header(0x08, 6, 28, 28)[:10])

    message = read_error(path, "images")

    assert message == f"{path}: header is cut short: 10 bytes, expected 16 for 3 dimensions"


def test_header_cut_short_inside_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(header(0x08, 6)[:6], mtime=0))

    message = read_error(path, "labels")

    assert message == f"{path}: header is cut short: 6 bytes, expected 8 for 1 dimension"


@pytest.mark.parametrize("cut", [5, 20, -4], ids=["in-gzip-header", "in-deflate-stream", "in-trailer"])
def test_gzip_cut_short(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(IMAGES), mtime=0)[:cut])

    message = read_error(path, "images")

    assert message == f"{path}: gzip stream ends early, the file is truncated; delete it and download it again"


def test_gzip_checksum_mismatch(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(idx_bytes(LABELS), mtime=0))
    # The gzip trailer is the CRC-32 then the length, 4 bytes each, so byte -8 is in the CRC.
    compressed[-8] ^= 0xFF
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(compressed))

    message = read_error(path, "labels")

    assert message == f"{path}: gzip data is corrupt (CRC check failed); delete it and download it again"


def test_gzip_content_under_raw_name(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", LABELS, compress=True)

    message = read_error(path, "labels")

    assert message == (
        f"{path}: content is gzip-compressed but the name has no .gz suffix; "
        f"rename it to train-labels-idx1-ubyte.gz"
    )


def test_raw_content_under_gz_name(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", LABELS, compress=False)

    message = read_error(path, "labels")

    assert message == (
        f"{path}: name ends in .gz but the content is not gzip-compressed; "
        f"rename it to train-labels-idx1-ubyte if it is a raw IDX file"
    )


def test_wrong_magic_number(tmp_path: Path) -> None:
    # What a mirror's HTML error page looks like after decompression.
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"<html><body>Not Found</body></html>", mtime=0))

    message = read_error(path, "labels")

    assert message == (
        f"{path}: invalid magic number 0x3c68746d, expected 0x000008 followed by the number "
        f"of dimensions; this is not an IDX file"
    )


def test_float32_data_type(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(IMAGES.astype(np.float32), type_code=0x0D))

    message = read_error(path, "images")

    assert message == f"{path}: data type is float32 (code 0x0d), expected uint8 (0x08)"


def test_zero_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 0]))

    message = read_error(path, "labels")

    assert message == f"{path}: header declares 0 dimensions, expected 1 (labels) or 3 (images)"


def test_count_larger_than_payload(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(header(0x08, 10) + LABELS.tobytes(), mtime=0))

    message = read_error(path, "labels")

    assert message == (
        f"{path}: header declares 10 = 10 bytes of data but the file holds 6; "
        f"the file is truncated or its count is wrong"
    )


def test_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(LABELS) + b"\x00\x01\x02")

    message = read_error(path, "labels")

    assert message == (
        f"{path}: 3 trailing bytes after the 6 bytes of data that the header (6) declares; the file is corrupt"
    )


def test_label_outside_classes(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([1, 2, 10, 4, 255], dtype=np.uint8))

    message = read_error(path, "labels")

    assert message == f"{path}: label 10 at index 2 is outside 0-9 (2 invalid labels in all)"


def test_images_not_28x28(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 32, 28), dtype=np.uint8))

    message = read_error(path, "images")

    assert message == f"{path}: images are 32x28, expected 28x28"


def test_labels_file_read_as_images(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", LABELS)

    message = read_error(path, "images")

    assert message == (
        f"{path}: header declares 1 dimension, expected 3 for images; "
        f"check that images and labels files are not swapped"
    )


def test_images_file_read_as_labels(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", IMAGES)

    message = read_error(path, "labels")

    assert message == (
        f"{path}: header declares 3 dimensions, expected 1 for labels; "
        f"check that images and labels files are not swapped"
    )


def test_check_counts_message() -> None:
    with pytest.raises(DataFormatError) as caught:
        idx.check_counts(IMAGES, LABELS[:4], Path("a/images"), Path("a/labels"))

    assert str(caught.value) == "a/images holds 6 images but a/labels holds 4 labels; use files from the same release"


# Untrusted header sizes: the reader checks them against the data before allocating.


@pytest.mark.parametrize(
    "dims",
    [(2**32 - 1,), (2**32 - 1, 28, 28), (2**31, 2**31, 2**31), (6, 2**32 - 1, 2**32 - 1)],
    ids=["labels-max", "images-max", "overflow-int64", "huge-rows"],
)
def test_huge_header_allocates_nothing(dims: tuple[int, ...]) -> None:
    data = header(0x08, *dims) + bytes(100)
    kind = "labels" if len(dims) == 1 else "images"

    tracemalloc.start()
    try:
        with pytest.raises(DataFormatError):
            idx.parse_idx(data, Path("huge"), kind)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 64 * 1024


# Fuzzing: whatever the bytes, the reader returns a valid array or raises DataFormatError.


def check_parse(data: bytes, kind: str) -> None:
    """Parse ``data``; a result must be a valid array, and the only error DataFormatError."""
    try:
        array = idx.parse_idx(data, Path("fuzzed"), kind)
    except DataFormatError as error:
        assert "\n" not in str(error)
        return
    assert array.dtype == np.uint8
    if kind == "images":
        assert array.shape[1:] == (28, 28)
    else:
        assert array.ndim == 1
        assert array.size == 0 or int(array.max()) <= 9
    assert len(data) == 4 + 4 * array.ndim + array.size


def check_read(path: Path, content: bytes, kind: str) -> None:
    path.write_bytes(content)
    try:
        idx.read_idx(path, kind)
    except DataFormatError:
        pass


@st.composite
def mutated_idx(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid small IDX file with a few random mutations applied, and its kind."""
    kind = draw(st.sampled_from(["images", "labels"]))
    count = draw(st.integers(0, 3))
    labels = np.array(draw(st.lists(st.integers(0, 9), min_size=count, max_size=count)), dtype=np.uint8)
    data = bytearray(idx_bytes(make_images(labels) if kind == "images" else labels))
    header_size = 16 if kind == "images" else 8

    mutations = draw(
        st.lists(
            st.sampled_from(["flip", "truncate", "append", "dimension", "ndim", "type"]),
            min_size=1,
            max_size=3,
        )
    )
    for mutation in mutations:
        if mutation == "flip" and data:
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= draw(st.integers(1, 255))
        elif mutation == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif mutation == "append":
            data += draw(st.binary(min_size=1, max_size=64))
        elif mutation == "dimension" and len(data) >= header_size:
            dimension = draw(st.integers(0, header_size // 4 - 2))
            value = draw(st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 28, 2**31, 2**32 - 1])))
            data[4 + 4 * dimension : 8 + 4 * dimension] = struct.pack(">I", value)
        elif mutation == "ndim" and len(data) >= 4:
            data[3] = draw(st.integers(0, 255))
        elif mutation == "type" and len(data) >= 4:
            data[2] = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
    return bytes(data), kind


@FUZZ_SETTINGS
@given(data=st.binary(max_size=2048), kind=st.sampled_from(["images", "labels"]))
def test_fuzz_parse_arbitrary_bytes(data: bytes, kind: str) -> None:
    check_parse(data, kind)


@FUZZ_SETTINGS
@given(case=mutated_idx())
def test_fuzz_parse_mutated_idx(case: tuple[bytes, str]) -> None:
    data, kind = case

    tracemalloc.start()
    try:
        check_parse(data, kind)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Nothing is sized from the header: the parser needs memory in proportion to the data.
    assert peak < 2 * len(data) + 64 * 1024


@FUZZ_SETTINGS
@given(case=mutated_idx(), compress=st.booleans(), gz_name=st.booleans())
def test_fuzz_read_mutated_idx_files(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[bytes, str], compress: bool, gz_name: bool
) -> None:
    data, kind = case
    name = "fuzzed.gz" if gz_name else "fuzzed"
    content = gzip.compress(data, mtime=0) if compress else data

    check_read(tmp_path_factory.mktemp("fuzz") / name, content, kind)


@FUZZ_SETTINGS
@given(
    data=st.binary(max_size=512),
    wrap=st.booleans(),
    cut=st.integers(0, 600),
    flip=st.tuples(st.integers(0, 600), st.integers(1, 255)),
    kind=st.sampled_from(["images", "labels"]),
)
def test_fuzz_read_damaged_gzip(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, wrap: bool, cut: int, flip: tuple[int, int], kind: str
) -> None:
    # Damage the gzip stream itself: arbitrary payload, optionally wrapped, then cut and flipped.
    content = bytearray(gzip.compress(data, mtime=0) if wrap else data)
    del content[cut:]
    position, mask = flip
    if position < len(content):
        content[position] ^= mask

    check_read(tmp_path_factory.mktemp("fuzz") / "fuzzed.gz", bytes(content), kind)
