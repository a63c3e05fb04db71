import numpy as np
import pytest

from fmnist import metrics


def test_confusion_matrix_counts():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    matrix = metrics.confusion_matrix(labels, predictions, num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_per_class_scores_by_hand():
    matrix = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    scores = metrics.per_class_scores(matrix)
    assert scores["precision"] == pytest.approx([0.5, 0.5, 1.0])
    assert scores["recall"] == pytest.approx([0.5, 1.0, 2 / 3])
    assert scores["f1"] == pytest.approx([0.5, 2 / 3, 0.8])
    assert scores["support"].tolist() == [2, 1, 3]


def test_never_predicted_class_scores_zero():
    scores = metrics.per_class_scores(np.array([[2, 0], [1, 0]]))
    assert scores["precision"][1] == 0.0
    assert scores["f1"][1] == 0.0


def test_summarize_accuracy_and_macro_f1():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    summary = metrics.summarize(labels, predictions, ["a", "b", "c"])
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert summary["per_class"][2] == {
        "class": 2, "class_name": "c", "precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3,
    }
    assert summary["samples"] == 6
