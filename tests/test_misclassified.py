"""The most confident test mistakes: selection, the .npz file and its checks."""

import numpy as np
import pytest

from fmnist.errors import CheckpointError
from fmnist.misclassified import (
    MISCLASSIFIED_FILE,
    misclassified_arrays,
    read_misclassified,
    save_misclassified,
    select_misclassified,
)
from synthetic_runs import make_predictions, make_run_dir

FIX = "delete the file and rebuild it with 'fmnist report RUN_DIR --data-dir DIR'"


def test_select_most_confident_first():
    labels = np.array([0, 1, 2, 3, 4])
    predictions = np.array([1, 1, 0, 3, 0])
    probabilities = np.full((5, 10), 0.05)
    probabilities[0, 1] = 0.6
    probabilities[2, 0] = 0.9
    probabilities[4, 0] = 0.7
    assert select_misclassified(labels, predictions, probabilities).tolist() == [2, 4, 0]
    assert select_misclassified(labels, predictions, probabilities, count=2).tolist() == [2, 4]


def test_select_ties_keep_position_order():
    labels = np.array([0, 0, 0, 0])
    predictions = np.array([1, 2, 0, 3])
    probabilities = np.full((4, 10), 0.5)
    assert select_misclassified(labels, predictions, probabilities).tolist() == [0, 1, 3]


def test_select_no_mistakes():
    labels = np.arange(10)
    assert select_misclassified(labels, labels.copy(), np.eye(10)).tolist() == []


def test_arrays_need_probabilities():
    evaluation = make_predictions(20, 3)
    evaluation.probabilities = None
    with pytest.raises(ValueError, match="keep_probabilities=True"):
        misclassified_arrays(evaluation, None)


def test_save_and_read_round_trip(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", test_count=200, mistakes=40)
    arrays = read_misclassified(run_dir / MISCLASSIFIED_FILE)
    expected = make_predictions(200, 40)
    assert len(arrays["index"]) == 36
    # make_predictions gives the i-th mistake the i-th highest confidence.
    assert arrays["index"].tolist() == expected.wrong[:36].tolist()
    assert arrays["label"].tolist() == expected.labels[expected.wrong[:36]].tolist()
    assert arrays["prediction"].tolist() == expected.predictions[expected.wrong[:36]].tolist()
    assert np.all(np.diff(arrays["probability"]) <= 0)
    assert arrays["probability"][0] == pytest.approx(0.99)
    assert arrays["label_probability"][0] == pytest.approx(0.01 / 9)
    assert arrays["images"].shape == (36, 28, 28)
    assert arrays["images"].dtype == np.uint8


def test_save_uses_dataset_rows(tmp_path):
    evaluation = make_predictions(20, 2)
    images = np.arange(40 * 28 * 28, dtype=np.int64).reshape(40, 28, 28).astype(np.uint8)
    test_set = type("Subset", (), {"indices": np.arange(20, 40), "images": images})()
    path = save_misclassified(tmp_path, evaluation, test_set)
    arrays = read_misclassified(path)
    assert arrays["index"].tolist() == (evaluation.wrong + 20).tolist()
    assert np.array_equal(arrays["images"], images[evaluation.wrong + 20])


def _write(path, **arrays):
    np.savez(path, **arrays)


def _valid_arrays(count=2):
    return {
        "index": np.arange(count),
        "label": np.zeros(count, dtype=np.int64),
        "prediction": np.ones(count, dtype=np.int64),
        "probability": np.full(count, 0.9, dtype=np.float32),
        "label_probability": np.full(count, 0.05, dtype=np.float32),
        "images": np.zeros((count, 28, 28), dtype=np.uint8),
    }


def test_read_missing_file(tmp_path):
    path = tmp_path / MISCLASSIFIED_FILE
    with pytest.raises(CheckpointError) as raised:
        read_misclassified(path)
    assert str(raised.value) == (
        f"{path}: misclassified images not found; rebuild them with 'fmnist report RUN_DIR --data-dir DIR'"
    )


def test_read_truncated_file(tmp_path):
    path = tmp_path / MISCLASSIFIED_FILE
    _write(path, **_valid_arrays())
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError) as raised:
        read_misclassified(path)
    assert str(raised.value).startswith(f"{path}: misclassified images cannot be read (")
    assert str(raised.value).endswith(f"); {FIX}")


def test_read_rejects_pickled_objects(tmp_path):
    path = tmp_path / MISCLASSIFIED_FILE
    arrays = _valid_arrays()
    arrays["index"] = np.array([object(), object()], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_misclassified(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": None}, "misclassified images have no array images"),
        ({"label": np.zeros(3, dtype=np.int64)}, "array label has shape (3,), expected (2,)"),
        ({"images": np.zeros((2, 28, 28), dtype=np.float32)}, "array images has data type float32, expected uint8"),
        ({"prediction": np.array([0, 10])}, "array prediction must hold class numbers 0-9"),
        ({"label": np.array([-1, 0])}, "array label must hold class numbers 0-9"),
        ({"probability": np.array([0.5, 1.5], dtype=np.float32)}, "array probability must hold probabilities in [0, 1]"),
        ({"label_probability": np.array([1, 0])}, "array label_probability must hold probabilities in [0, 1]"),
    ],
)
def test_read_checks_arrays(tmp_path, change, message):
    path = tmp_path / MISCLASSIFIED_FILE
    arrays = _valid_arrays()
    for name, value in change.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    _write(path, **arrays)
    with pytest.raises(CheckpointError) as raised:
        read_misclassified(path)
    assert str(raised.value) == f"{path}: {message}; {FIX}"


def test_read_empty_arrays(tmp_path):
    path = tmp_path / MISCLASSIFIED_FILE
    _write(path, **_valid_arrays(count=0))
    assert len(read_misclassified(path)["images"]) == 0
