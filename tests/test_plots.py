"""The PNG plots of a run: learning curves and the confusion matrix."""

import matplotlib.axes
import pytest
from PIL import Image

from fmnist import plots, report, runs
from synthetic_runs import make_history, make_run_dir


@pytest.fixture
def plotted_labels(monkeypatch):
    """The label of every line that Axes.plot draws while the test runs."""
    labels = []
    original = matplotlib.axes.Axes.plot

    def record(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    return labels


def test_history_names_label_smoothing(plotted_labels, tmp_path):
    plots.plot_history(make_history(4, 3), tmp_path / "history.png", 3, 0.1)
    assert Image.open(tmp_path / "history.png").format == "PNG"
    assert plotted_labels[:2] == ["train loss (label smoothing 0.1)", "val loss"]


def test_history_plain_train_loss(plotted_labels, tmp_path):
    plots.plot_history(make_history(4, 3), tmp_path / "history.png", 3, 0.0)
    assert Image.open(tmp_path / "history.png").format == "PNG"
    assert plotted_labels[:2] == ["train loss", "val loss"]


def test_report_curves_name_label_smoothing(plotted_labels, tmp_path):
    run_dir = make_run_dir(tmp_path / "run", config={"label_smoothing": 0.2})
    report._curves_section(runs.read_run(run_dir), 3)
    assert plotted_labels[:2] == ["train loss (label smoothing 0.2)", "val loss"]
