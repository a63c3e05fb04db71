"""Kaggle's CSV release of Fashion-MNIST: strict validation and conversion into the .npy cache.

Kaggle ships the dataset as ``fashion-mnist_train.csv`` and ``fashion-mnist_test.csv``.
Each file starts with the header row ``label,pixel1,...,pixel784``. Every following
row contains one image: its label 0-9, then its 784 pixel values 0-255 in row-major order.

A data directory is read from these files when it lacks one of the four IDX files and
holds both CSV files; a complete set of IDX files always wins. Each CSV file is parsed
once with vectorised numpy code into the same digest-keyed ``.npy`` cache as the IDX
files, so later runs memory-map the arrays without parsing text again. A CSV file is
never the official release, whose files are the IDX files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from fmnist import data
from fmnist.datasets import FASHION_MNIST, DatasetSpec
from fmnist.download import md5_of
from fmnist.errors import DataFormatError, DataNotFoundError

logger = logging.getLogger(__name__)

CSV_FILES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}
PIXELS = 28 * 28
COLUMNS = ("label", *(f"pixel{number}" for number in range(1, PIXELS + 1)))
HEADER = ",".join(COLUMNS)
SHORT_HEADER = "label,pixel1,...,pixel784"
UTF8_BOM = b"\xef\xbb\xbf"

# Rows are parsed in blocks of about this many bytes, which bounds the memory of the
# temporary arrays (a few times the block size) whatever the size of the file.
BLOCK_BYTES = 16 << 20
MAX_DIGITS = 3
COMMA = ord(",")
NEWLINE = ord("\n")
ZERO = ord("0")
NINE = ord("9")


def csv_files_to_use(data_dir: Path, spec: DatasetSpec = FASHION_MNIST) -> dict[str, Path] | None:
    """Return the CSV file of each split when ``data_dir`` is to be read from CSV, else None.

    None means that the IDX files are complete (they win over CSV files) or that no CSV
    file is present. Raises DataNotFoundError when only one of the two CSV files is
    present and the IDX files are incomplete, because neither form can then be read.
    """
    if all(data.find_data_file(data_dir, data_file) is not None for data_file in spec.files):
        return None
    present = {split: data_dir / name for split, name in CSV_FILES.items() if (data_dir / name).is_file()}
    if not present:
        return None
    if len(present) == 1:
        (found,) = present.values()
        (missing,) = (name for name in CSV_FILES.values() if name != found.name)
        raise DataNotFoundError(
            f"{data_dir}: contains {found.name} but not {missing}; put both CSV files of Kaggle's release "
            f"there, or the four IDX files ('fmnist download --data-dir {data_dir}' fetches them)"
        )
    return present


def load_csv_split(path: Path, cache_dir: Path) -> data.SplitArrays:
    """Validate the CSV file at ``path`` and memory-map its images and labels from the cache.

    The cache file names carry the MD5 digest of the CSV file, so the file is parsed
    only when it is new or has changed.
    """
    digest = md5_of(path)
    source = data.SourceFile(path=path, md5=digest, official=False)
    images_path = cache_dir / f"{path.stem}.{digest}.images.npy"
    labels_path = cache_dir / f"{path.stem}.{digest}.labels.npy"

    arrays = _open_cached_pair(images_path, labels_path)
    if arrays is None:
        started = time.perf_counter()
        images, labels = read_csv(path)
        data._write_cache(images_path, images)
        data._write_cache(labels_path, labels)
        logger.info(
            "Converted %s (%d images) into the cache %s in %.1fs",
            path, len(labels), cache_dir, time.perf_counter() - started,
        )
        arrays = _open_cached_pair(images_path, labels_path)
    logger.info("%s is Kaggle's CSV release, not the official IDX files (MD5 %s); format checks passed", path, digest)
    images, labels = arrays
    return data.SplitArrays(images=images, labels=labels, sources=(source,))


def _open_cached_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Open both cache files read-only, or return None when one is missing or damaged."""
    if not (images_path.exists() and labels_path.exists()):
        return None
    try:
        images = np.lib.format.open_memmap(images_path, mode="r")
        labels = np.lib.format.open_memmap(labels_path, mode="r")
    except (OSError, ValueError) as error:
        logger.warning("Rebuilding damaged cache files %s (%s)", images_path, error)
        return None
    valid = (
        images.dtype == np.uint8
        and labels.dtype == np.uint8
        and images.ndim == 3
        and images.shape[1:] == (28, 28)
        and labels.ndim == 1
        and len(images) == len(labels) > 0
        and int(labels.max()) < len(FASHION_MNIST.class_names)
    )
    if not valid:
        logger.warning(
            "Rebuilding cache files %s: found images %s %s and labels %s %s",
            images_path, images.dtype, images.shape, labels.dtype, labels.shape,
        )
        return None
    return images, labels


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate a CSV file of Kaggle's release; return uint8 images ``(count, 28, 28)`` and labels."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found; check --data-dir") from None
    except IsADirectoryError:
        raise DataFormatError(f"{path}: is a directory, expected a CSV file") from None
    except OSError as error:
        raise DataFormatError(f"{path}: cannot be read ({error.strerror}); check its permissions") from None
    return parse_csv(content, path)


def parse_csv(content: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Validate CSV ``content`` and return its images and labels; ``path`` names it in errors.

    Line endings may be LF or CRLF, a UTF-8 byte order mark and newlines at the end
    of the file are ignored. Anything else that is not a header, or a row of 785
    integers in range, raises DataFormatError with the line number and the column.
    """
    if not content:
        raise DataFormatError(
            f"{path}: file is empty, expected the header {SHORT_HEADER} and one image per row; "
            f"download the file again"
        )
    if content.startswith(UTF8_BOM):
        content = content[len(UTF8_BOM) :]
    if b"\r" in content:
        content = content.replace(b"\r\n", b"\n")

    header_end = content.find(b"\n")
    if header_end < 0:
        header_end = len(content)
    _check_header(content[:header_end], path)

    end = len(content)
    while end > header_end and content[end - 1] == NEWLINE:
        end -= 1
    if end <= header_end:
        raise DataFormatError(
            f"{path}: contains the header but no rows, expected one image per row after it; download the file again"
        )

    buffer = np.frombuffer(content, dtype=np.uint8)
    images_parts = []
    labels_parts = []
    start = header_end + 1
    first_line = 2
    while start < end:
        stop = _block_end(content, start, end)
        rows = _parse_block(buffer[start:stop], path, first_line)
        labels_parts.append(rows[:, 0].astype(np.uint8))
        images_parts.append(rows[:, 1:].astype(np.uint8).reshape(len(rows), 28, 28))
        first_line += len(rows)
        start = stop + 1
    return np.concatenate(images_parts), np.concatenate(labels_parts)


def _block_end(content: bytes, start: int, end: int) -> int:
    """Return the position of the newline that ends a block starting at ``start``, or ``end``."""
    if end - start <= BLOCK_BYTES:
        return end
    newline = content.find(b"\n", start + BLOCK_BYTES, end)
    return end if newline < 0 else newline


def _check_header(header: bytes, path: Path) -> None:
    text = header.decode("utf-8", errors="replace")
    if text == HEADER:
        return
    names = text.split(",")
    if names[0].isdigit():
        raise DataFormatError(
            f"{path}: line 1 is a row of numbers, expected the header {SHORT_HEADER}; add that header as the first line"
        )
    for column, (found, expected) in enumerate(zip(names, COLUMNS), start=1):
        if found != expected:
            raise DataFormatError(
                f"{path}: line 1: header column {column} is {_shorten(found)!a}, expected {expected!r} "
                f"(the header is {SHORT_HEADER}); use the CSV files of Kaggle's Fashion-MNIST release"
            )
    raise DataFormatError(
        f"{path}: line 1: header has {len(names)} columns, expected {len(COLUMNS)} ({SHORT_HEADER}); "
        f"use the CSV files of Kaggle's Fashion-MNIST release"
    )


def _parse_block(block: np.ndarray, path: Path, first_line: int) -> np.ndarray:
    """Parse complete rows (without the newline after the last) into an int16 array ``(rows, 785)``.

    The work is done on whole byte arrays shifted against each other rather than cell by
    cell. A valid cell has 1 to 3 digits. Its value is its last digit, plus 10 times the
    digit before, plus 100 times the one before that; a position before the start of
    the cell counts as digit 0.
    """
    # Newlines around the block end its first and last rows like every other row.
    text = np.empty(len(block) + 2, dtype=np.uint8)
    text[0] = text[-1] = NEWLINE
    text[1:-1] = block
    is_comma = text == COMMA
    is_newline = text == NEWLINE
    is_separator = is_comma | is_newline
    is_digit = (text >= ZERO) & (text <= NINE)
    newlines = np.flatnonzero(is_newline)

    problems = []
    invalid = np.flatnonzero(~(is_digit | is_separator))
    if invalid.size:
        problems.append(int(invalid[0]))
    empty_cells = np.flatnonzero(is_separator[:-1] & is_separator[1:])
    if empty_cells.size:
        problems.append(int(empty_cells[0]) + 1)
    long_cells = np.flatnonzero(is_digit[:-3] & is_digit[1:-2] & is_digit[2:-1] & is_digit[3:])
    if long_cells.size:
        problems.append(int(long_cells[0]))
    if problems:
        row = _row_at(newlines, min(problems))
        if row > 0:
            # The rows before are well-formed, so parsing them reports only a value out of range.
            _parse_block(block[: newlines[row] - 1], path, first_line)
        _raise_row_error(text, newlines, row, path, first_line)

    # Uint8 digits (0 where there is no digit), weighted into int16 values at each cell end.
    digits = text - np.uint8(ZERO)
    np.multiply(digits, is_digit, out=digits)
    values = digits.astype(np.int16)
    values[1:] += np.multiply(digits[:-1], 10, dtype=np.int16)
    values[2:] += np.multiply(digits[:-2], 100, dtype=np.int16) * is_digit[1:-1]
    cell_ends = is_digit[:-1] & is_separator[1:]
    cells = values[:-1][cell_ends]

    # Every row must end after exactly 785 cells; the first row that does not is ragged.
    row_ends = np.flatnonzero(is_newline[1:][cell_ends])
    expected_ends = np.arange(len(COLUMNS) - 1, len(cells), len(COLUMNS))
    if len(row_ends) != len(expected_ends) or not np.array_equal(row_ends, expected_ends):
        mismatch = np.flatnonzero(row_ends[: len(expected_ends)] != expected_ends[: len(row_ends)])
        ragged_row = int(mismatch[0]) if mismatch.size else min(len(row_ends), len(expected_ends))
        _raise_row_error(text, newlines, ragged_row, path, first_line)
    rows = cells.reshape(len(newlines) - 1, len(COLUMNS))

    out_of_range = np.flatnonzero((rows[:, 0] >= len(FASHION_MNIST.class_names)) | (rows[:, 1:] > 255).any(axis=1))
    if out_of_range.size:
        _raise_row_error(text, newlines, int(out_of_range[0]), path, first_line)
    return rows


def _row_at(newlines: np.ndarray, position: int) -> int:
    """Return the row of the padded block that holds byte ``position``; a row owns the newline that ends it."""
    return max(int(np.searchsorted(newlines, position, side="left")) - 1, 0)


def _raise_row_error(text: np.ndarray, newlines: np.ndarray, row: int, path: Path, first_line: int) -> None:
    """Raise the DataFormatError that describes the first problem of ``row`` of the padded block ``text``."""
    line = text[newlines[row] + 1 : newlines[row + 1]].tobytes().decode("utf-8", errors="replace")
    raise DataFormatError(f"{path}: line {first_line + row}: {_row_problem(line)}")


def _row_problem(line: str) -> str:
    """Return what is wrong with one data row and what to do about it."""
    fix = "fix the row or download the file again"
    if line == "":
        return f"row is empty, expected a label and {PIXELS} pixel values; remove the blank line"
    cells = line.split(",")
    for column, cell in enumerate(cells[: len(COLUMNS)], start=1):
        name = COLUMNS[column - 1]
        expected = "a class index 0-9" if name == "label" else "an integer 0-255"
        if cell == "":
            return f"{name} (column {column}) is empty, expected {expected}; {fix}"
        if not (cell.isascii() and cell.isdigit() and len(cell) <= MAX_DIGITS):
            return f"{name} (column {column}) is {_shorten(cell)!a}, expected {expected}; {fix}"
        if int(cell) > (9 if name == "label" else 255):
            return f"{name} (column {column}) is {int(cell)}, expected {expected}; {fix}"
    return (
        f"row has {len(cells)} values, expected {len(COLUMNS)} (a label and {PIXELS} pixel values); "
        f"the file is truncated or damaged, {fix}"
    )


def _shorten(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
