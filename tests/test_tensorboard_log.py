"""Tests of fmnist.tensorboard_log: fmnist train --tensorboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmnist import tensorboard_log
from fmnist.cli import main


def test_scalars_of_every_epoch(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    code = main([
        "train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
        "--epochs", "3", "--batch-size", "32", "--tensorboard", "--quiet",
    ])

    assert code == 0
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss/train", "loss/val", "lr", "val/accuracy", "val/macro_f1"]
    history = json.loads((run_dir / "history.json").read_text())
    for field, tag in tensorboard_log.SCALAR_TAGS.items():
        scalars = events.Scalars(tag)
        assert [scalar.step for scalar in scalars] == [1, 2, 3]
        assert [scalar.value for scalar in scalars] == pytest.approx([record[field] for record in history], rel=1e-6)


def test_off_by_default(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    assert main([
        "train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
        "--epochs", "1", "--batch-size", "64", "--quiet",
    ]) == 0
    assert not (run_dir / "tensorboard").exists()


def test_missing_package_fails_before_training(tmp_path: Path, data_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(tensorboard_log, "tensorboard_installed", lambda: False)

    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(tmp_path / "run"), "--tensorboard"])

    assert code == 2
    assert capsys.readouterr().err == (
        "error: --tensorboard needs the tensorboard package, which is not installed; "
        "run pip install 'fmnist[tensorboard]' or leave out --tensorboard\n"
    )
    assert not (tmp_path / "run").exists()


def test_installed_check_matches_import() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert not tensorboard_log.tensorboard_installed()
    else:
        assert tensorboard_log.tensorboard_installed()
