"""Tests of fmnist.csv_data: Kaggle's CSV release as a data directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fmnist import csv_data, data, download
from fmnist.cli import main
from fmnist.download import md5_of
from fmnist.errors import DataFormatError, DataNotFoundError
from synthetic import make_dataset, make_images

HEADER = "label," + ",".join(f"pixel{number}" for number in range(1, 785))
TRAIN_CSV = "fashion-mnist_train.csv"
TEST_CSV = "fashion-mnist_test.csv"


def csv_text(images: np.ndarray, labels: np.ndarray, newline: str = "\n") -> str:
    """Return ``images`` and ``labels`` in the layout of Kaggle's CSV files."""
    rows = [HEADER]
    for label, image in zip(labels, images.reshape(len(images), -1)):
        rows.append(",".join([str(int(label)), *map(str, image.tolist())]))
    return newline.join(rows) + newline


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(csv_text(images, labels))
    return path


def split_arrays(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.resize(np.arange(10, dtype=np.uint8), count)
    np.random.default_rng(seed).shuffle(labels)
    return make_images(labels, seed=seed), labels


def make_csv_dataset(data_dir: Path, train_count: int = 400, test_count: int = 100) -> Path:
    """Write both CSV files of a small learnable dataset into ``data_dir``."""
    write_csv(data_dir / TRAIN_CSV, *split_arrays(train_count, seed=1))
    write_csv(data_dir / TEST_CSV, *split_arrays(test_count, seed=2))
    return data_dir


def one_row(label: int = 3, pixel: int = 7) -> str:
    return ",".join([str(label)] + [str(pixel)] * 784)


def parse_error(text: str | bytes, path: Path = Path("train.csv")) -> str:
    content = text.encode() if isinstance(text, str) else text
    with pytest.raises(DataFormatError) as caught:
        csv_data.parse_csv(content, path)
    assert caught.value.exit_code == 2
    return str(caught.value)


# Parsing.


def test_parse_returns_known_arrays() -> None:
    images, labels = split_arrays(25, seed=3)

    parsed_images, parsed_labels = csv_data.parse_csv(csv_text(images, labels).encode(), Path("x.csv"))

    assert parsed_images.dtype == np.uint8
    assert parsed_images.shape == (25, 28, 28)
    assert np.array_equal(parsed_images, images)
    assert np.array_equal(parsed_labels, labels)


def test_parse_extreme_values() -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[0] = 255
    images[1, 0, 0] = 9
    images[1, 27, 27] = 10
    images[2, 13, 14] = 100
    labels = np.array([0, 9, 5], dtype=np.uint8)

    parsed_images, parsed_labels = csv_data.parse_csv(csv_text(images, labels).encode(), Path("x.csv"))

    assert np.array_equal(parsed_images, images)
    assert np.array_equal(parsed_labels, labels)


def test_parse_crlf_bom_and_trailing_newlines() -> None:
    images, labels = split_arrays(4, seed=4)
    content = b"\xef\xbb\xbf" + csv_text(images, labels, newline="\r\n").encode() + b"\r\n\n"

    parsed_images, parsed_labels = csv_data.parse_csv(content, Path("x.csv"))

    assert np.array_equal(parsed_images, images)
    assert np.array_equal(parsed_labels, labels)


def test_parse_without_final_newline() -> None:
    images, labels = split_arrays(3, seed=5)

    parsed_images, _ = csv_data.parse_csv(csv_text(images, labels).rstrip("\n").encode(), Path("x.csv"))

    assert np.array_equal(parsed_images, images)


def test_parse_in_many_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_data, "BLOCK_BYTES", 5000)
    images, labels = split_arrays(40, seed=6)

    parsed_images, parsed_labels = csv_data.parse_csv(csv_text(images, labels).encode(), Path("x.csv"))

    assert np.array_equal(parsed_images, images)
    assert np.array_equal(parsed_labels, labels)


@settings(max_examples=25, deadline=None)
@given(
    images=arrays(np.uint8, st.tuples(st.integers(1, 6), st.just(28), st.just(28))),
    block_bytes=st.integers(1, 20000),
    data=st.data(),
)
def test_parse_round_trip_property(images: np.ndarray, block_bytes: int, data) -> None:
    labels = np.array(data.draw(st.lists(st.integers(0, 9), min_size=len(images), max_size=len(images))), dtype=np.uint8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_data, "BLOCK_BYTES", block_bytes)
        parsed_images, parsed_labels = csv_data.parse_csv(csv_text(images, labels).encode(), Path("x.csv"))
    assert np.array_equal(parsed_images, images)
    assert np.array_equal(parsed_labels, labels)


# Validation: each problem has its own message with the file, the line and the fix.

FIX = "fix the row or download the file again"


def test_empty_file() -> None:
    assert parse_error(b"") == (
        "train.csv: file is empty, expected the header label,pixel1,...,pixel784 and one image per row; "
        "download the file again"
    )


@pytest.mark.parametrize("text", [HEADER, HEADER + "\n", HEADER + "\n\n\n"])
def test_header_without_rows(text: str) -> None:
    assert parse_error(text) == (
        "train.csv: contains the header but no rows, expected one image per row after it; download the file again"
    )


def test_header_missing() -> None:
    assert parse_error(one_row() + "\n" + one_row() + "\n") == (
        "train.csv: line 1 is a row of numbers, expected the header label,pixel1,...,pixel784; "
        "add that header as the first line"
    )


def test_header_wrong_name() -> None:
    header = HEADER.replace("pixel300,", "pixel300x,")
    assert parse_error(header + "\n" + one_row() + "\n") == (
        "train.csv: line 1: header column 301 is 'pixel300x', expected 'pixel300' (the header is "
        "label,pixel1,...,pixel784); use the CSV files of Kaggle's Fashion-MNIST release"
    )


def test_header_quoted_names() -> None:
    header = ",".join(f'"{name}"' for name in HEADER.split(","))
    assert parse_error(header + "\n" + one_row() + "\n").startswith(
        "train.csv: line 1: header column 1 is '\"label\"', expected 'label' "
    )


@pytest.mark.parametrize("header, count", [(HEADER.removesuffix(",pixel784"), 784), (HEADER + ",pixel785", 786)])
def test_header_wrong_width(header: str, count: int) -> None:
    assert parse_error(header + "\n" + one_row() + "\n") == (
        f"train.csv: line 1: header has {count} columns, expected 785 (label,pixel1,...,pixel784); "
        f"use the CSV files of Kaggle's Fashion-MNIST release"
    )


def rows_with(bad_row: str, position: int = 2, count: int = 4) -> str:
    """Return a CSV text of ``count`` valid rows with row ``position`` (1-based) replaced by ``bad_row``."""
    rows = [one_row() for _ in range(count)]
    rows[position - 1] = bad_row
    return HEADER + "\n" + "\n".join(rows) + "\n"


def test_short_row() -> None:
    short = one_row().rsplit(",", 1)[0]
    assert parse_error(rows_with(short)) == (
        f"train.csv: line 3: row has 784 values, expected 785 (a label and 784 pixel values); "
        f"the file is truncated or damaged, {FIX}"
    )


def test_long_row() -> None:
    assert parse_error(rows_with(one_row() + ",0", position=4)) == (
        f"train.csv: line 5: row has 786 values, expected 785 (a label and 784 pixel values); "
        f"the file is truncated or damaged, {FIX}"
    )


def test_truncated_last_row() -> None:
    text = rows_with(one_row()).rstrip("\n")
    assert parse_error(text[: len(text) - 100]) == (
        f"train.csv: line 5: row has 735 values, expected 785 (a label and 784 pixel values); "
        f"the file is truncated or damaged, {FIX}"
    )


def test_short_row_then_long_row() -> None:
    short = one_row().rsplit(",", 1)[0]
    rows = [one_row(), short, one_row() + ",1", one_row()]
    assert parse_error(HEADER + "\n" + "\n".join(rows) + "\n").startswith("train.csv: line 3: row has 784 values,")


def test_blank_line() -> None:
    assert parse_error(rows_with("", position=3)) == (
        "train.csv: line 4: row is empty, expected a label and 784 pixel values; remove the blank line"
    )


def replace_cell(column: int, value: str) -> str:
    cells = one_row().split(",")
    cells[column - 1] = value
    return ",".join(cells)


@pytest.mark.parametrize(
    "column, value, expected",
    [
        (5, "abc", "pixel4 (column 5) is 'abc', expected an integer 0-255"),
        (5, "-1", "pixel4 (column 5) is '-1', expected an integer 0-255"),
        (5, "1.5", "pixel4 (column 5) is '1.5', expected an integer 0-255"),
        (5, " 12", "pixel4 (column 5) is ' 12', expected an integer 0-255"),
        (5, "1e2", "pixel4 (column 5) is '1e2', expected an integer 0-255"),
        (785, "0001", "pixel784 (column 785) is '0001', expected an integer 0-255"),
        (5, "256", "pixel4 (column 5) is 256, expected an integer 0-255"),
        (785, "999", "pixel784 (column 785) is 999, expected an integer 0-255"),
        (5, "", "pixel4 (column 5) is empty, expected an integer 0-255"),
        (785, "", "pixel784 (column 785) is empty, expected an integer 0-255"),
        (1, "", "label (column 1) is empty, expected a class index 0-9"),
        (1, "10", "label (column 1) is 10, expected a class index 0-9"),
        (1, "T-shirt", "label (column 1) is 'T-shirt', expected a class index 0-9"),
        (2, "x" * 30, "pixel1 (column 2) is 'xxxxxxxxxxxxxxxxxxxx...', expected an integer 0-255"),
    ],
)
def test_invalid_cell(column: int, value: str, expected: str) -> None:
    assert parse_error(rows_with(replace_cell(column, value), position=2)) == f"train.csv: line 3: {expected}; {FIX}"


def test_first_problem_is_reported() -> None:
    rows = [one_row(), replace_cell(9, "300"), replace_cell(3, "x"), one_row()]
    assert parse_error(HEADER + "\n" + "\n".join(rows) + "\n") == (
        f"train.csv: line 3: pixel8 (column 9) is 300, expected an integer 0-255; {FIX}"
    )


def test_problem_in_later_block_has_its_line_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_data, "BLOCK_BYTES", 3000)
    rows = [one_row() for _ in range(30)]
    rows[26] = replace_cell(700, "7x")
    assert parse_error(HEADER + "\n" + "\n".join(rows) + "\n") == (
        f"train.csv: line 28: pixel699 (column 700) is '7x', expected an integer 0-255; {FIX}"
    )


def test_stray_carriage_return() -> None:
    assert parse_error(rows_with(one_row() + "\r\r")) == (
        f"train.csv: line 3: pixel784 (column 785) is '7\\r', expected an integer 0-255; {FIX}"
    )


def test_not_utf8_text() -> None:
    content = (HEADER + "\n").encode() + replace_cell(2, "\xff").encode("latin-1") + b"\n"
    assert parse_error(content) == f"train.csv: line 2: pixel1 (column 2) is '\\ufffd', expected an integer 0-255; {FIX}"


def test_read_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as caught:
        csv_data.read_csv(tmp_path / TRAIN_CSV)
    assert str(caught.value) == f"{tmp_path / TRAIN_CSV}: file not found; check --data-dir"


def test_read_csv_directory(tmp_path: Path) -> None:
    (tmp_path / TRAIN_CSV).mkdir()
    with pytest.raises(DataFormatError) as caught:
        csv_data.read_csv(tmp_path / TRAIN_CSV)
    assert str(caught.value) == f"{tmp_path / TRAIN_CSV}: is a directory, expected a CSV file"


# Data directories and the cache.


def test_load_split_from_csv(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = make_csv_dataset(tmp_path / "csv", train_count=30, test_count=20)
    images, labels = split_arrays(30, seed=1)

    with caplog.at_level(logging.INFO, logger="fmnist"):
        split = data.load_split(data_dir, "train")

    assert np.array_equal(split.images, images)
    assert np.array_equal(split.labels, labels)
    assert not split.images.flags.writeable
    digest = md5_of(data_dir / TRAIN_CSV)
    assert split.sources == (data.SourceFile(data_dir / TRAIN_CSV, digest, official=False),)
    cache = data_dir / data.CACHE_DIR_NAME
    assert sorted(path.name for path in cache.iterdir()) == [
        f"fashion-mnist_train.{digest}.images.npy",
        f"fashion-mnist_train.{digest}.labels.npy",
    ]
    assert (
        f"{data_dir / TRAIN_CSV} is Kaggle's CSV release, not the official IDX files (MD5 {digest}); format checks passed"
        in caplog.messages
    )
    assert data.load_split(data_dir, "test").images.shape == (20, 28, 28)


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = csv_data.read_csv

    def counting(path: Path):
        calls.append(path.name)
        return original(path)

    monkeypatch.setattr(csv_data, "read_csv", counting)
    return calls


def test_csv_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = make_csv_dataset(tmp_path / "csv", train_count=30, test_count=20)
    calls = count_parses(monkeypatch)

    first = data.load_split(data_dir, "train")
    second = data.load_split(data_dir, "train")

    assert calls == [TRAIN_CSV]
    assert np.array_equal(first.images, second.images)


def test_changed_csv_gets_new_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = make_csv_dataset(tmp_path / "csv", train_count=30, test_count=20)
    data.load_split(data_dir, "train")
    images, labels = split_arrays(30, seed=9)
    write_csv(data_dir / TRAIN_CSV, images, labels)
    calls = count_parses(monkeypatch)

    split = data.load_split(data_dir, "train")

    assert calls == [TRAIN_CSV]
    assert np.array_equal(split.images, images)


@pytest.mark.parametrize("kind", ["images", "labels"])
def test_damaged_cache_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    data_dir = make_csv_dataset(tmp_path / "csv", train_count=30, test_count=20)
    data.load_split(data_dir, "train")
    cache_file = data_dir / data.CACHE_DIR_NAME / f"fashion-mnist_train.{md5_of(data_dir / TRAIN_CSV)}.{kind}.npy"
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    calls = count_parses(monkeypatch)

    split = data.load_split(data_dir, "train")

    assert calls == [TRAIN_CSV]
    assert np.array_equal(split.images, split_arrays(30, seed=1)[0])


def test_cache_with_wrong_labels_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = make_csv_dataset(tmp_path / "csv", train_count=30, test_count=20)
    data.load_split(data_dir, "train")
    labels_file = data_dir / data.CACHE_DIR_NAME / f"fashion-mnist_train.{md5_of(data_dir / TRAIN_CSV)}.labels.npy"
    np.save(labels_file, np.full(30, 12, dtype=np.uint8))
    calls = count_parses(monkeypatch)

    split = data.load_split(data_dir, "train")

    assert calls == [TRAIN_CSV]
    assert int(split.labels.max()) == 9


def test_invalid_csv_leaves_no_cache(tmp_path: Path) -> None:
    data_dir = make_csv_dataset(tmp_path / "csv", train_count=30, test_count=20)
    (data_dir / TRAIN_CSV).write_text(HEADER + "\n" + replace_cell(1, "11") + "\n")

    with pytest.raises(DataFormatError) as caught:
        data.load_split(data_dir, "train")

    assert str(caught.value) == f"{data_dir / TRAIN_CSV}: line 2: label (column 1) is 11, expected a class index 0-9; {FIX}"
    assert list((data_dir / data.CACHE_DIR_NAME).iterdir()) == []


def test_idx_files_win_over_csv(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "both", train_count=30, test_count=20)
    make_csv_dataset(data_dir, train_count=50, test_count=10)

    split = data.load_split(data_dir, "train")

    assert len(split.labels) == 30
    assert [source.path.name for source in split.sources] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_csv_used_when_idx_incomplete(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "both", train_count=30, test_count=20)
    (data_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    make_csv_dataset(data_dir, train_count=50, test_count=10)

    assert len(data.load_split(data_dir, "train").labels) == 50


def test_one_csv_file_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "half"
    write_csv(data_dir / TRAIN_CSV, *split_arrays(20, seed=1))

    with pytest.raises(DataNotFoundError) as caught:
        csv_data.csv_files_to_use(data_dir)

    assert str(caught.value) == (
        f"{data_dir}: contains {TRAIN_CSV} but not {TEST_CSV}; put both CSV files of Kaggle's release there, "
        f"or the four IDX files ('fmnist download --data-dir {data_dir}' fetches them)"
    )


def test_no_csv_files(tmp_path: Path) -> None:
    assert csv_data.csv_files_to_use(tmp_path / "missing") is None
    assert csv_data.csv_files_to_use(make_dataset(tmp_path / "idx", train_count=20, test_count=10)) is None


# The command line.


def test_train_on_csv_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    data_dir = make_csv_dataset(tmp_path / "csv")

    def no_download(*args, **kwargs):
        raise AssertionError("a CSV data directory must not trigger a download")

    monkeypatch.setattr(download, "download_dataset", no_download)
    run_dir = tmp_path / "run"

    code = main([
        "train", "--data-dir", str(data_dir), "--output-dir", str(run_dir),
        "--epochs", "2", "--batch-size", "32", "--quiet", "--json",
    ])

    assert code == 0
    assert capsys.readouterr().err == ""
    metadata = json.loads((run_dir / "model.json").read_text())
    assert metadata["data_files"] == [
        {"name": TRAIN_CSV, "path": str((data_dir / TRAIN_CSV).resolve()), "md5": md5_of(data_dir / TRAIN_CSV), "official": False},
        {"name": TEST_CSV, "path": str((data_dir / TEST_CSV).resolve()), "md5": md5_of(data_dir / TEST_CSV), "official": False},
    ]
    assert metadata["split_sizes"] == {"train": 360, "val": 40, "test": 100}
    assert json.loads((run_dir / "metrics.json").read_text())["accuracy"] > 0.9


def test_train_on_invalid_csv_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir = make_csv_dataset(tmp_path / "csv")
    (data_dir / TEST_CSV).write_text(HEADER + "\n" + one_row(pixel=256) + "\n")

    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(tmp_path / "run"), "--quiet"])

    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {data_dir / TEST_CSV}: line 2: pixel1 (column 2) is 256, expected an integer 0-255; {FIX}\n"
    )
    assert not (tmp_path / "run").exists()
