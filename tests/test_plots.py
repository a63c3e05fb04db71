"""The PNG plots of a run: learning curves and the confusion matrix."""

import matplotlib.axes
from PIL import Image

from fmnist import plots
from synthetic_runs import make_history


def plotted_labels(monkeypatch, label_smoothing, tmp_path):
    labels = []
    original = matplotlib.axes.Axes.plot

    def record(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    plots.plot_history(make_history(4, 3), tmp_path / "history.png", 3, label_smoothing)
    assert Image.open(tmp_path / "history.png").format == "PNG"
    return labels


def test_history_names_label_smoothing(monkeypatch, tmp_path):
    labels = plotted_labels(monkeypatch, 0.1, tmp_path)
    assert labels[:2] == ["train loss (label smoothing 0.1)", "val loss"]


def test_history_plain_train_loss(monkeypatch, tmp_path):
    labels = plotted_labels(monkeypatch, 0.0, tmp_path)
    assert labels[:2] == ["train loss", "val loss"]


def test_report_curves_name_label_smoothing(monkeypatch, tmp_path):
    from fmnist import report, runs
    from synthetic_runs import make_run_dir

    labels = []
    original = matplotlib.axes.Axes.plot

    def record(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    run_dir = make_run_dir(tmp_path / "run", config={"label_smoothing": 0.2})
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    report._curves_section(runs.read_run(run_dir), 3)
    assert labels[:2] == ["train loss (label smoothing 0.2)", "val loss"]
