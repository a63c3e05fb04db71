"""Reading run directories and the table of 'fmnist runs'."""

import json
import logging
import os
import time

import numpy as np
import pytest

from fmnist import runs
from fmnist.errors import CheckpointError, ConfigError
from synthetic_runs import make_run_dir

DAMAGED = "the file is damaged, train again or restore it from a backup"


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


def test_read_run(tmp_path):
    run = runs.read_run(make_run_dir(tmp_path / "run"))
    assert run.metadata["best_epoch"] == 3
    assert run.metrics["samples"] == 200
    assert [record.epoch for record in run.history] == [1, 2, 3, 4]


def test_read_run_missing_directory(tmp_path):
    with pytest.raises(CheckpointError) as raised:
        runs.read_run(tmp_path / "nope")
    assert str(raised.value) == f"{tmp_path / 'nope'}: no such run directory; pass a directory written by 'fmnist train'"


def test_read_run_without_json_files(tmp_path):
    (tmp_path / "train.log").write_text("")
    with pytest.raises(CheckpointError) as raised:
        runs.read_run(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path}: neither model.json nor history.json found; pass a run directory written by 'fmnist train'"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({"epoch": 1}, "training history is a JSON dict, expected a list of epoch records"),
        ([1], "epoch record 0 is not a JSON object"),
        ([{"epoch": 1, "step": 2}], "epoch record 0 has no train_loss, val_loss, val_accuracy, val_macro_f1, lr, seconds"),
    ],
)
def test_read_history_damaged(tmp_path, content, problem):
    path = tmp_path / "history.json"
    path.write_text(json.dumps(content))
    with pytest.raises(CheckpointError) as raised:
        runs.read_history(path)
    assert str(raised.value) == f"{path}: {problem}; {DAMAGED}"


def test_read_history_wrong_type(tmp_path):
    run_dir = make_run_dir(tmp_path / "run")
    history = json.loads((run_dir / "history.json").read_text())
    history[1]["val_loss"] = "0.3"
    (run_dir / "history.json").write_text(json.dumps(history))
    with pytest.raises(CheckpointError) as raised:
        runs.read_history(run_dir / "history.json")
    assert str(raised.value) == f"{run_dir / 'history.json'}: epoch record 1 has val_loss '0.3', expected a number; {DAMAGED}"


def test_read_history_null_is_nan(tmp_path):
    run_dir = make_run_dir(tmp_path / "run")
    history = json.loads((run_dir / "history.json").read_text())
    history[0]["val_loss"] = None
    (run_dir / "history.json").write_text(json.dumps(history))
    records = runs.read_history(run_dir / "history.json")
    assert records[0].val_loss != records[0].val_loss


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.pop("macro_f1"), "macro_f1 is None, expected a number"),
        (lambda m: m.update(per_class=[]), "per_class is missing or empty, expected one entry per class"),
        (lambda m: m["per_class"][2].pop("class_name"), "per_class entry 2 has no class_name"),
        (lambda m: m["per_class"][4].update(recall=True), "per_class entry 4 has recall True, expected a number"),
        (lambda m: m["confusion_matrix"].pop(), "confusion_matrix is not a 10x10 table of counts"),
        (lambda m: m["confusion_matrix"][3].append(1), "confusion_matrix is not a 10x10 table of counts"),
    ],
)
def test_read_metrics_damaged(tmp_path, change, problem):
    run_dir = make_run_dir(tmp_path / "run")
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    change(metrics)
    path.write_text(json.dumps(metrics))
    with pytest.raises(CheckpointError) as raised:
        runs.read_metrics(path)
    assert str(raised.value) == f"{path}: {problem}; {DAMAGED}"


def test_read_metrics_not_an_object(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("[]")
    with pytest.raises(CheckpointError) as raised:
        runs.read_metrics(path)
    assert str(raised.value) == f"{path}: test metrics are not a JSON object; {DAMAGED}"


def test_summarize_run(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", config={"batch_size": 64})
    row = runs.summarize_run(runs.read_run(run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert row["run_dir"] == str(run_dir)
    assert row["name"] == "run"
    assert row["status"] == "ok"
    assert row["problem"] is None
    assert row["created"] == "2026-12-04T12:00:00+00:00"
    assert row["config"]["batch_size"] == 64
    assert row["epochs_run"] == 4
    assert row["best_epoch"] == 3
    assert row["best_val_loss"] == 0.3
    assert row["test_accuracy"] == metrics["accuracy"]
    assert row["test_macro_f1"] == metrics["macro_f1"]
    assert row["seconds"] == 75.25
    assert row["stop_reason"] == "reached the maximum of 4 epochs"


def test_find_runs_skips_other_directories(tmp_path, caplog):
    make_run_dir(tmp_path / "b")
    make_run_dir(tmp_path / "a")
    (tmp_path / "notes").mkdir()
    (tmp_path / "file.txt").write_text("")
    caplog.set_level(logging.DEBUG, logger="fmnist")
    assert runs.find_runs(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert caplog.messages == [
        f"Skipping {tmp_path / 'notes'}: it contains none of model.json, history.json, metrics.json, config.json, checkpoint.pt, train.log"
    ]


def test_find_runs_of_a_run_directory(tmp_path):
    run_dir = make_run_dir(tmp_path / "run")
    assert runs.find_runs(run_dir) == [run_dir]


def test_find_runs_missing_directory(tmp_path):
    with pytest.raises(ConfigError) as raised:
        runs.find_runs(tmp_path / "runs")
    assert str(raised.value) == (
        f"{tmp_path / 'runs'}: no such directory; pass the directory that contains the run directories (default: runs)"
    )


def test_list_runs_orders_and_marks_problems(tmp_path, caplog):
    make_run_dir(tmp_path / "late", created="2999-12-05T08:00:00+00:00")
    make_run_dir(tmp_path / "early", created="2000-12-01T08:00:00+00:00")
    damaged = make_run_dir(tmp_path / "damaged")
    (damaged / "model.json").write_text("{")
    incomplete = make_run_dir(tmp_path / "incomplete")
    (incomplete / "model.json").unlink()
    caplog.set_level(logging.DEBUG, logger="fmnist")

    rows = runs.list_runs(tmp_path)
    by_name = {row["name"]: row for row in rows}
    # The incomplete run has no model.json, so its date is its directory's modification time.
    assert [row["name"] for row in rows] == ["early", "incomplete", "late", "damaged"]
    assert by_name["damaged"]["status"] == "damaged"
    assert by_name["damaged"]["problem"].startswith(f"{damaged / 'model.json'}: model metadata cannot be read (")
    assert by_name["damaged"]["test_accuracy"] is None
    assert by_name["incomplete"]["status"] == "incomplete"
    assert by_name["incomplete"]["epochs_run"] == 4
    assert by_name["incomplete"]["best_epoch"] is None
    assert by_name["incomplete"]["test_accuracy"] == by_name["early"]["test_accuracy"]
    assert any(message.startswith(f"Cannot read {damaged}: ") for message in caplog.messages)
    json.dumps(rows)


def test_format_runs_table(tmp_path, utc):
    make_run_dir(tmp_path / "20261204-120000")
    make_run_dir(tmp_path / "wide", created="2026-12-05T09:30:00+00:00",
                 config={"batch_size": 1024, "lr": 0.0003, "weight_decay": 0.0001, "seed": 7, "epochs": 30})
    damaged = make_run_dir(tmp_path / "x")
    (damaged / "metrics.json").write_text("{}")
    rows = runs.list_runs(tmp_path)
    accuracy = f"{rows[0]['test_accuracy']:.4f}"
    f1 = f"{rows[0]['test_macro_f1']:.4f}"
    assert runs.format_runs_table(rows).splitlines() == [
        "run              date              batch      lr  dropout      wd  seed  epochs  best  val loss  test acc  macro-F1    time",
        f"20261204-120000  2026-12-04 12:00    128   0.001      0.2       0     0     4/4     3    0.3000    {accuracy}    {f1}  1m 15s",
        f"wide             2026-12-05 09:30   1024  0.0003      0.2  0.0001     7    4/30     3    0.3000    {accuracy}    {f1}  1m 15s",
        "x                -                     -       -        -       -     -     -/-     -         -         -         -       -",
        "",
        f"x: damaged: {damaged / 'metrics.json'}: accuracy is None, expected a number; {DAMAGED}",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.04, "0.0s"), (59.94, "59.9s"), (60, "1m 00s"), (3599.4, "59m 59s"), (3600, "1h 00m"), (7384, "2h 03m")],
)
def test_format_seconds(seconds, text):
    assert runs.format_seconds(seconds) == text


def test_interrupted_run_listed_incomplete(tmp_path):
    from fmnist import checkpoint
    from fmnist.config import TrainConfig
    from fmnist.runs import list_runs

    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    checkpoint.write_run_config(run_dir, TrainConfig(batch_size=64, seed=3), {})
    (run_dir / "checkpoint.pt").write_bytes(b"")

    rows = list_runs(tmp_path)

    assert [row["status"] for row in rows] == ["incomplete"]
    assert rows[0]["config"]["batch_size"] == 64
    assert rows[0]["config"]["seed"] == 3


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda path: path.unlink(), "model file not found; pass a run directory written by 'fmnist train'"),
        (lambda path: path.write_bytes(b""), "model file is empty; train again or restore it from a backup"),
        (lambda path: path.write_bytes(path.read_bytes()[:-10]), "model file is truncated or corrupt ("),
    ],
)
def test_list_runs_marks_unusable_weights(tmp_path, damage, problem):
    make_run_dir(tmp_path / "good")
    weights = make_run_dir(tmp_path / "bad") / "model.safetensors"
    damage(weights)

    by_name = {row["name"]: row for row in runs.list_runs(tmp_path)}
    assert by_name["good"]["status"] == "ok"
    assert by_name["bad"]["status"] == "damaged"
    assert by_name["bad"]["problem"].startswith(f"{weights}: {problem}")


def test_list_runs_marks_nan_weights(tmp_path):
    from safetensors.numpy import load_file, save_file

    weights = make_run_dir(tmp_path / "bad") / "model.safetensors"
    state = load_file(weights)
    state["7.bias"][0] = np.nan
    save_file(state, weights)

    row = runs.list_runs(tmp_path)[0]
    assert row["status"] == "damaged"
    assert row["problem"] == f"{weights}: tensor 7.bias contains NaN or infinite values; train again or restore the file from a backup"


def test_list_runs_tolerates_odd_values(tmp_path):
    run_dir = make_run_dir(tmp_path / "odd")
    make_run_dir(tmp_path / "good")
    metadata = json.loads((run_dir / "model.json").read_text())
    metadata["seconds"] = float("inf")
    metadata["config"]["lr"] = "abc"
    metadata["config"]["dropout"] = float("nan")
    (run_dir / "model.json").write_text(json.dumps(metadata))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["accuracy"] = float("nan")
    (run_dir / "metrics.json").write_text(json.dumps(metrics))

    rows = runs.list_runs(tmp_path)
    by_name = {row["name"]: row for row in rows}
    assert by_name["good"]["status"] == "ok"
    assert by_name["odd"]["seconds"] is None
    assert by_name["odd"]["test_accuracy"] is None
    assert by_name["odd"]["config"]["dropout"] is None
    json.dumps(rows, allow_nan=False)
    table = runs.format_runs_table(rows)
    odd_line = next(line for line in table.splitlines() if line.startswith("odd"))
    assert " abc " in odd_line
    assert "nan" not in table
