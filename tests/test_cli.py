"""End-to-end runs of the command line on small synthetic data."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist import artifacts
from fmnist.cli import main
from synthetic import make_dataset, make_images

RUN_FILES = {
    "confusion_matrix.png",
    "history.csv",
    "history.json",
    "history.png",
    "metrics.json",
    "model.json",
    "model.safetensors",
    "train.log",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run shared by the tests of this module."""
    root = tmp_path_factory.mktemp("cli")
    data_dir = make_dataset(root / "data")
    run_dir = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        code = main([
            "train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
            "--epochs", "3", "--batch-size", "32", "--quiet", "--json",
        ])
    assert code == 0
    return data_dir, run_dir


def test_train_writes_run_directory(trained):
    _, run_dir = trained
    assert {path.name for path in run_dir.iterdir()} >= RUN_FILES
    # export and compare refuse to overwrite these names, so the list must name every file a run writes.
    assert {path.name for path in run_dir.iterdir()} == artifacts.RUN_FILES
    metadata = json.loads((run_dir / "model.json").read_text())
    assert metadata["format_version"] == 1
    assert metadata["architecture"]["name"] == "mlp-784-300-200-10"
    assert metadata["config"]["epochs"] == 3
    assert metadata["seed"] == 0
    assert 1 <= metadata["best_epoch"] <= 3
    assert [entry["official"] for entry in metadata["data_files"]] == [False] * 4
    history = json.loads((run_dir / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "step", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds"}
    assert (run_dir / "history.csv").read_text().splitlines()[0] == "epoch,step,train_loss,val_loss,val_accuracy,val_macro_f1,lr,seconds"
    assert json.loads((run_dir / "metrics.json").read_text())["accuracy"] > 0.9


def test_train_json_summary(tmp_path, data_dir, capsys):
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(tmp_path / "r"),
                 "--epochs", "1", "--batch-size", "64", "--quiet", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"run_dir", "best_epoch", "epochs_run", "test_accuracy", "test_macro_f1", "seconds"} <= set(summary)
    assert summary["run_dir"] == str(tmp_path / "r")
    assert summary["epochs_run"] == 1


def test_evaluate_json(trained, capsys):
    data_dir, run_dir = trained
    code = main(["evaluate", str(run_dir), "--data-dir", str(data_dir), "--offline", "--json", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(result)
    assert len(result["per_class"]) == 10
    assert np.array(result["confusion_matrix"]).sum() == 100
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert result["accuracy"] == saved["accuracy"]


def test_evaluate_text_report(trained, capsys):
    data_dir, run_dir = trained
    assert main(["evaluate", str(run_dir), "--data-dir", str(data_dir), "--offline", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Test split: 100 images\naccuracy  ")
    assert "Ankle boot" in out
    assert "Confusion matrix (rows: true class, columns: predicted class):" in out


def test_predict_json_with_bad_file(trained, tmp_path, capsys):
    _, run_dir = trained
    labels = np.array([3, 7], dtype=np.uint8)
    images = make_images(labels, seed=5)
    paths = []
    for label, image in zip(labels, images):
        path = tmp_path / f"class{label}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    code = main(["predict", str(run_dir), str(paths[0]), str(broken), str(paths[1]), "--json", "--invert", "never"])
    captured = capsys.readouterr()
    assert code == 2
    results = json.loads(captured.out)
    assert [entry["file"] for entry in results] == [str(paths[0]), str(broken), str(paths[1])]
    assert results[0]["label"] == 3
    assert results[2]["label"] == 7
    assert results[0]["class_name"] == "Dress"
    assert "error" in results[1]
    assert captured.err.strip() == "error: 1 of 3 images could not be classified"


def test_missing_data_offline_exit_2(tmp_path, capsys):
    code = main(["train", "--data-dir", str(tmp_path / "empty"), "--offline", "--output-dir", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'empty'}: missing train-images-idx3-ubyte.gz, ")
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_invalid_option_before_any_work(tmp_path, data_dir, capsys):
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(tmp_path / "r"), "--lr", "0"])
    assert code == 2
    assert capsys.readouterr().err == "error: invalid options: --lr must be a positive number, got 0.0\n"
    assert not (tmp_path / "r").exists()


def test_output_dir_not_empty(tmp_path, data_dir, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("mine")
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(tmp_path / "r")])
    assert code == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "r" / "keep.txt").read_text() == "mine"


def test_evaluate_missing_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "--offline"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nope'}: no such run directory or model file; pass the directory that 'fmnist train' wrote\n"
    )


def test_unknown_option_exit_2(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["train", "--no-such-option"])
    assert raised.value.code == 2


def test_module_entry_point_version():
    completed = subprocess.run([sys.executable, "-m", "fmnist", "--version"], capture_output=True, text=True,
                               env={"PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert completed.returncode == 0
    assert completed.stdout.startswith("fmnist ")


def test_train_without_preset_uses_defaults(trained):
    from fmnist.config import TrainConfig

    _, run_dir = trained
    config = json.loads((run_dir / "model.json").read_text())["config"]
    defaults = TrainConfig().to_dict()
    assert config["preset"] is None
    for field in ("lr", "dropout", "patience", "lr_end_factor", "label_smoothing", "augment_shift"):
        assert config[field] == defaults[field], field


def test_train_preset_with_explicit_override(tmp_path, data_dir, capsys):
    from fmnist.config import PRESETS

    run_dir = tmp_path / "r"
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir), "--preset", "best",
                 "--epochs", "1", "--batch-size", "32", "--quiet", "--json"])
    assert code == 0
    config = json.loads((run_dir / "model.json").read_text())["config"]
    assert config["preset"] == "best"
    assert config["epochs"] == 1
    assert config["batch_size"] == 32
    for field, value in PRESETS["best"].items():
        if field not in ("epochs", "batch_size"):
            assert config[field] == value, field


def test_unknown_preset_exit_2(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["train", "--preset", "fastest"])
    assert raised.value.code == 2
    assert "argument --preset: invalid choice: 'fastest'" in capsys.readouterr().err


def test_train_log_covers_data_loading(trained):
    _, run_dir = trained
    log = (run_dir / "train.log").read_text()
    assert "is not the official release file" in log
    assert log.index("is not the official release file") < log.index("Run directory ")
