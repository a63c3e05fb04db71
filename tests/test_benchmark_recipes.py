"""benchmarks/recipes.py: the sweep script whose figures docs/benchmarks.md records."""

import json
import sys
from pathlib import Path

import pytest

from fmnist.cli import main as fmnist_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import recipes  # noqa: E402

RECIPE = ["--epochs", "3", "--batch-size", "32", "--lr", "0.002", "--lr-end-factor", "0.01", "--dropout", "0.1",
          "--weight-decay", "5e-05", "--label-smoothing", "0.1", "--augment-shift", "1"]


def run_recipe(data_dir: Path, output: Path, *options: str) -> dict:
    assert recipes.main(["--data-dir", str(data_dir), "--output", str(output), "--seed", "3", *RECIPE, *options]) == 0
    return json.loads(output.read_text().splitlines()[-1])


def test_recipe_matches_fmnist_train(data_dir, tmp_path, capsys):
    result = run_recipe(data_dir, tmp_path / "recipes.jsonl")

    run_dir = tmp_path / "run"
    code = fmnist_main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir), "--seed", "3",
                        "--threads", "1", "--patience", "100", "--quiet", *RECIPE])
    assert code == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    metadata = json.loads((run_dir / "model.json").read_text())

    assert result["test_accuracy"] == round(100 * metrics["accuracy"], 2)
    assert result["best_epoch"] == metadata["best_epoch"]
    expected_losses = [record["val_loss"] for record in history]
    assert result["val_loss_per_epoch"] == pytest.approx(expected_losses, abs=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        ["--ema-decay", "0.9"],
        ["--decoupled-weight-decay", "--weight-decay", "0.05"],
        ["--mixup-alpha", "0.2"],
        ["--noise-std", "0.3"],
        ["--sam-rho", "0.05"],
        ["--teacher", "mlp-ensemble", "--teacher-count", "2", "--teacher-epochs", "1"],
        ["--teacher", "cnn", "--teacher-epochs", "1", "--cnn-channels", "4"],
    ],
)
def test_recipe_options_record_result(data_dir, tmp_path, options, capsys):
    result = run_recipe(data_dir, tmp_path / "recipes.jsonl", "--tag", "trial", *options)
    assert result["tag"] == "trial"
    assert 0 <= result["test_accuracy"] <= 100
    assert 1 <= result["best_epoch"] <= 3
    assert len(result["test_accuracy_per_epoch"]) == 3
    assert len(result["val_loss_per_epoch"]) == 3
    if "--teacher" in options:
        count = 2 if "mlp-ensemble" in options else 1
        assert len(result["teacher_test_accuracies"]) == count
        assert 0 <= result["teachers_together_test_accuracy"] <= 100
    else:
        assert result["teacher_test_accuracies"] is None


def test_recipe_without_finite_val_loss(data_dir, tmp_path, capsys):
    output = tmp_path / "recipes.jsonl"
    code = recipes.main(["--data-dir", str(data_dir), "--output", str(output), "--epochs", "1", "--lr", "1e20"])
    assert code == 1
    assert capsys.readouterr().err.splitlines()[-1] == "error: no epoch had a finite val loss; lower --lr and run again"
    assert not output.exists()


def test_recipe_rejects_zero_epochs(capsys):
    with pytest.raises(SystemExit) as raised:
        recipes.main(["--epochs", "0"])
    assert raised.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(": error: --epochs must be at least 1, got 0")
