"""Comparing runs: one PNG of learning curves and the metrics side by side."""

import json
import os
import time

import pytest
from PIL import Image

from fmnist import compare
from fmnist.errors import CheckpointError, ConfigError
from synthetic_runs import make_run_dir


@pytest.fixture
def utc():
    """Show dates in UTC, so that the expected table does not depend on the machine's time zone."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


@pytest.fixture
def two_runs(tmp_path):
    first = make_run_dir(tmp_path / "base")
    second = make_run_dir(tmp_path / "big-batch", epochs=6, best_epoch=5, mistakes=20,
                          config={"batch_size": 512, "patience": 2}, created="2026-12-04T13:30:00+00:00")
    return first, second


def test_run_labels_unique():
    assert compare.run_labels([]) == []
    assert compare.run_labels(["runs/a", "runs/b"]) == ["a", "b"]
    assert compare.run_labels(["x/run", "y/run", "runs/c"]) == ["x/run", "y/run", "c"]
    assert compare.run_labels(["x/run", "x/run"]) == ["x/run", "x/run (2)"]


def test_compare_writes_png(two_runs, tmp_path):
    output = tmp_path / "curves.png"
    result = compare.compare_runs(two_runs, output)
    assert result["plot"] == str(output)
    with Image.open(output) as image:
        assert image.format == "PNG"
        assert image.width > 1000
    assert [summary["label"] for summary in result["runs"]] == ["base", "big-batch"]
    assert [summary["best_epoch"] for summary in result["runs"]] == [3, 5]
    assert result["runs"][1]["config"]["batch_size"] == 512
    json.dumps(result)


def test_format_comparison(two_runs, tmp_path, utc):
    output = tmp_path / "curves.png"
    result = compare.compare_runs(two_runs, output)
    first, second = result["runs"]
    assert compare.format_comparison(result).splitlines() == [
        "                           base         big-batch",
        "date           2026-12-04 12:00  2026-12-04 13:30",
        "batch size                  128               512",
        "lr                        0.001             0.001",
        "dropout                     0.2               0.2",
        "weight decay                0.0               0.0",
        "seed                          0                 0",
        "max epochs                    4                 6",
        "patience                      5                 2",
        "epochs run                    4                 6",
        "best epoch                    3                 5",
        "best val loss            0.3000            0.3000",
        f"test accuracy            {first['test_accuracy']:.4f}            {second['test_accuracy']:.4f}",
        f"test macro-F1            {first['test_macro_f1']:.4f}            {second['test_macro_f1']:.4f}",
        "wall time                1m 15s            1m 15s",
        "",
        f"Learning curves: {output}",
    ]


def test_format_comparison_incomplete_run(two_runs, tmp_path):
    (two_runs[1] / "model.json").unlink()
    result = compare.compare_runs(two_runs, tmp_path / "curves.png")
    lines = compare.format_comparison(result).splitlines()
    assert lines[2] == "batch size                  128                 -"
    assert lines[-3] == (
        "big-batch: no model.json: training has not finished, or it stopped before saving a model"
    )


def test_compare_run_without_history(two_runs, tmp_path):
    (two_runs[1] / "history.json").unlink()
    with pytest.raises(CheckpointError) as raised:
        compare.compare_runs(two_runs, tmp_path / "curves.png")
    assert str(raised.value) == (
        f"{two_runs[1]}: history.json not found; only runs that finished at least one epoch can be compared"
    )
    assert not (tmp_path / "curves.png").exists()


def test_compare_missing_run(two_runs, tmp_path):
    with pytest.raises(CheckpointError) as raised:
        compare.compare_runs([two_runs[0], tmp_path / "nope"], tmp_path / "curves.png")
    assert str(raised.value) == f"{tmp_path / 'nope'}: no such run directory; pass a directory written by 'fmnist train'"


def test_compare_missing_output_directory(two_runs, tmp_path):
    output = tmp_path / "plots" / "curves.png"
    with pytest.raises(ConfigError) as raised:
        compare.compare_runs(two_runs, output)
    assert str(raised.value) == (
        f"--output {output}: directory {tmp_path / 'plots'} does not exist; create it or choose another file"
    )


@pytest.mark.parametrize("name", ["history.png", "model.safetensors"])
def test_compare_refuses_run_files(two_runs, name):
    output = two_runs[0] / name
    output.write_bytes(b"the run's own file")
    with pytest.raises(ConfigError) as raised:
        compare.compare_runs(two_runs, output)
    assert str(raised.value) == (
        f"--output {output}: this is the {name} of the run directory {two_runs[0]}, and writing it would "
        f"replace the run's own file; choose another file name"
    )
    assert output.read_bytes() == b"the run's own file"


def test_compare_writes_new_file_in_run_directory(two_runs):
    output = two_runs[0] / "compare.png"
    compare.compare_runs(two_runs, output)
    assert Image.open(output).format == "PNG"


def test_compare_run_name_not_utf8(two_runs, tmp_path):
    odd = make_run_dir(tmp_path / os.fsdecode(b"run-\xff"))
    output = tmp_path / "curves.png"
    compare.compare_runs([two_runs[0], odd], output)
    assert Image.open(output).format == "PNG"
