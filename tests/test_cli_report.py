"""The result commands of the command line: the report of 'fmnist train', 'report', 'runs' and 'compare'."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fmnist import report
from fmnist.cli import main
from synthetic import make_dataset
from synthetic_runs import make_run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run on synthetic data, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("results")
    data_dir = make_dataset(root / "data")
    run_dir = root / "runs" / "first"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        code = main([
            "train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
            "--epochs", "2", "--batch-size", "32", "--lr", "0.001", "--quiet",
        ])
    assert code == 0
    return data_dir, run_dir


def test_train_writes_report(trained):
    _, run_dir = trained
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>fmnist run first</title>" in page
    metadata = json.loads((run_dir / "model.json").read_text())
    assert 0 < metadata["seconds"] < 600
    log = (run_dir / "train.log").read_text()
    assert f"Wrote report {run_dir / 'report.html'}" in log


def test_train_saves_misclassified(trained):
    _, run_dir = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    matrix = np.array(metrics["confusion_matrix"])
    mistakes = int(matrix.sum() - np.trace(matrix))
    with np.load(run_dir / "misclassified.npz", allow_pickle=False) as archive:
        assert len(archive["index"]) == min(mistakes, 36)
        assert archive["images"].shape == (min(mistakes, 36), 28, 28)


def test_train_keeps_model_when_report_fails(tmp_path, data_dir, monkeypatch, capsys):
    def fail(run_dir):
        raise RuntimeError("no figures today")

    monkeypatch.setattr(report, "render_report", fail)
    run_dir = tmp_path / "run"
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
                 "--epochs", "1", "--batch-size", "64", "--quiet"])
    assert code == 0
    assert (run_dir / "model.safetensors").exists()
    assert (run_dir / "model.json").exists()
    assert not (run_dir / "report.html").exists()
    assert capsys.readouterr().err == (
        f"Could not write {run_dir / 'report.html'} (RuntimeError: no figures today); the model is saved, "
        f"rebuild the report with 'fmnist report {run_dir}'\n"
    )


def test_report_command_rebuilds(trained, tmp_path, capsys):
    _, run_dir = trained
    copy = shutil.copytree(run_dir, tmp_path / "copy")
    (copy / "report.html").unlink()
    assert main(["report", str(copy)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"Wrote report {copy / 'report.html'}\n"
    assert "<title>fmnist run copy</title>" in (copy / "report.html").read_text(encoding="utf-8")


def test_report_command_output_option(trained, tmp_path, capsys):
    _, run_dir = trained
    output = tmp_path / "page.html"
    assert main(["report", str(run_dir), "--output", str(output), "--quiet"]) == 0
    assert output.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert capsys.readouterr().err == ""


def test_report_command_computes_misclassified(trained, tmp_path, capsys):
    data_dir, run_dir = trained
    copy = shutil.copytree(run_dir, tmp_path / "copy")
    (copy / "misclassified.npz").unlink()
    assert main(["report", str(copy), "--data-dir", str(data_dir), "--offline"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"Wrote report {copy / 'report.html'}"
    with np.load(run_dir / "misclassified.npz") as saved, np.load(copy / "misclassified.npz") as rebuilt:
        assert saved.files == rebuilt.files
        for name in saved.files:
            assert np.array_equal(saved[name], rebuilt[name]), name


def test_report_command_keeps_misclassified(trained, tmp_path, capsys):
    data_dir, run_dir = trained
    copy = shutil.copytree(run_dir, tmp_path / "copy")
    assert main(["report", str(copy), "--data-dir", str(tmp_path / "no-data"), "--offline"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"Keeping {copy / 'misclassified.npz'}; delete it to evaluate the model on --data-dir again",
        f"Wrote report {copy / 'report.html'}",
    ]


def test_report_command_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nope'}: no such run directory; pass a directory written by 'fmnist train'\n"
    )


def test_report_command_damaged_run(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path / "run")
    (run_dir / "metrics.json").write_text("{")
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_dir / 'metrics.json'}: test metrics cannot be read (")
    assert err.endswith("); the file is damaged\n")


def test_runs_command_table(trained, capsys):
    _, run_dir = trained
    assert main(["runs", str(run_dir.parent)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "date", "batch", "lr", "dropout", "wd", "seed", "epochs", "best", "val",
                                "loss", "test", "acc", "macro-F1", "time"]
    cells = lines[1].split()
    assert cells[0] == "first"
    assert cells[3:10] == ["32", "0.001", "0.2", "0", "0", "2/2", str(json.loads((run_dir / "model.json").read_text())["best_epoch"])]
    assert len(lines) == 2


def test_runs_command_json(trained, tmp_path, capsys):
    _, run_dir = trained
    root = tmp_path / "runs"
    shutil.copytree(run_dir, root / "first")
    make_run_dir(root / "made")
    (root / "empty").mkdir()
    assert main(["runs", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["name"] for row in rows) == ["first", "made"]
    first = next(row for row in rows if row["name"] == "first")
    assert first["status"] == "ok"
    assert first["config"]["batch_size"] == 32
    assert first["epochs_run"] == 2
    assert first["seconds"] > 0


def test_runs_command_default_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert main(["runs"]) == 0
    assert capsys.readouterr().out == "No run directories in runs\n"


def test_runs_command_missing_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 2
    assert capsys.readouterr().err == (
        "error: runs: no such directory; pass the directory that contains the run directories (default: runs)\n"
    )


def test_runs_command_debug_log(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    assert main(["runs", str(tmp_path), "--verbose"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"No run directories in {tmp_path}\n"
    assert captured.err == (
        f"Skipping {tmp_path / 'notes'}: it contains none of model.json, history.json, metrics.json, config.json, checkpoint.pt, train.log\n"
    )


def test_compare_command_default_output(trained, tmp_path, monkeypatch, capsys):
    _, run_dir = trained
    other = make_run_dir(tmp_path / "other")
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(run_dir), str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["first", "other"]
    assert lines[-1] == "Learning curves: compare.png"
    with Image.open(tmp_path / "compare.png") as image:
        assert image.format == "PNG"


def test_compare_command_json(trained, tmp_path, capsys):
    _, run_dir = trained
    other = make_run_dir(tmp_path / "other")
    output = tmp_path / "curves.png"
    assert main(["compare", str(run_dir), str(other), "--output", str(output), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["plot"] == str(output)
    assert [summary["label"] for summary in result["runs"]] == ["first", "other"]
    assert result["runs"][1]["best_epoch"] == 3
    assert output.exists()


def test_compare_command_missing_run(trained, tmp_path, capsys):
    _, run_dir = trained
    assert main(["compare", str(run_dir), str(tmp_path / "nope"), "--output", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nope'}: no such run directory; pass a directory written by 'fmnist train'\n"
    )


def test_compare_command_needs_a_run(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["compare"])
    assert raised.value.code == 2
    assert "the following arguments are required: RUN_DIR" in capsys.readouterr().err
