"""Tests of fmnist.checkpoint: checkpoint files, config.json and the settings of a resumed run."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist import checkpoint
from fmnist.config import TrainConfig
from fmnist.errors import CheckpointError, ConfigError
from fmnist.loading import FashionMNISTDataset
from fmnist.model import build_model
from fmnist.train import Trainer
from synthetic import make_images


def small_trainer(epochs: int = 2) -> Trainer:
    config = TrainConfig(epochs=epochs, batch_size=32, seed=3)
    labels = np.resize(np.arange(10, dtype=np.uint8), 120)
    images = make_images(labels)
    indices = np.arange(len(labels))
    train_set = FashionMNISTDataset(images, labels, indices[:100], mean=0.2, std=0.3)
    val_set = FashionMNISTDataset(images, labels, indices[100:], mean=0.2, std=0.3)
    torch.manual_seed(config.seed)
    return Trainer(build_model(config.dropout), config, train_set, val_set)


@pytest.fixture(scope="module")
def saved_trainer_state() -> dict:
    """The trainer state after epoch 2 of 3, as the checkpoint hook receives it."""
    trainer = small_trainer(epochs=3)
    states = []
    trainer.on_epoch_end = lambda trainer_: states.append(copy.deepcopy(trainer_.state_dict()))
    trainer.fit()
    return states[1]


@pytest.fixture
def trained_state(saved_trainer_state) -> dict:
    return copy.deepcopy(saved_trainer_state)


def assert_same_state(expected, actual, where="state"):
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), where
        assert actual.device.type == "cpu", where
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert sorted(actual, key=str) == sorted(expected, key=str), where
        for key in expected:
            assert_same_state(expected[key], actual[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for index, (left, right) in enumerate(zip(expected, actual)):
            assert_same_state(left, right, f"{where}[{index}]")
    else:
        assert actual == expected, where


# --- checkpoint files ------------------------------------------------------------------


def test_round_trip(tmp_path, trained_state):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint(path, trained_state)
    loaded = checkpoint.load_checkpoint(path)
    assert loaded["format_version"] == 1
    assert loaded["complete"] is False
    assert_same_state(trained_state, loaded["trainer"])
    assert loaded["trainer"]["epoch"] == 2
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_complete_flag(tmp_path, trained_state):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint(path, trained_state, complete=True)
    assert checkpoint.load_checkpoint(path)["complete"] is True


def test_restored_trainer_continues_identically(tmp_path):
    # Four epochs straight, against two epochs, a checkpoint, a new trainer and two more.
    straight = small_trainer(epochs=4).fit()

    first_half = small_trainer(epochs=4)
    saved = []

    def save_and_stop(trainer):
        checkpoint.save_checkpoint(tmp_path / "checkpoint.pt", trainer.state_dict())
        saved.append(trainer.epoch)
        if trainer.epoch == 2:
            raise KeyboardInterrupt

    first_half.on_epoch_end = save_and_stop
    with pytest.raises(KeyboardInterrupt):
        first_half.fit()
    torch.manual_seed(999)  # the global RNG state must come from the checkpoint

    second_half = small_trainer(epochs=4)
    second_half.load_state_dict(checkpoint.load_checkpoint(tmp_path / "checkpoint.pt")["trainer"])
    resumed = second_half.fit()

    strip = lambda history: [(r.epoch, r.step, r.train_loss, r.val_loss, r.val_accuracy, r.lr) for r in history]
    assert saved == [1, 2]
    assert strip(resumed.history) == strip(straight.history)
    assert resumed.stop_reason == straight.stop_reason == "reached the maximum of 4 epochs"
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_stopped_trainer_runs_no_epoch(tmp_path):
    trainer = small_trainer(epochs=2)
    trainer.fit()
    state = trainer.state_dict()
    assert state["stop_reason"] == "reached the maximum of 2 epochs"

    restored = small_trainer(epochs=2)
    restored.load_state_dict(state)
    restored.train_epoch = lambda: pytest.fail("an epoch ran after training had stopped")
    result = restored.fit()
    assert len(result.history) == 2
    assert result.stop_reason == "reached the maximum of 2 epochs"


def test_missing_checkpoint_is_none(tmp_path):
    assert checkpoint.load_checkpoint(tmp_path / "checkpoint.pt") is None


@pytest.mark.parametrize("size", [0, 100, 5000])
def test_truncated_checkpoint(tmp_path, trained_state, size):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint(path, trained_state)
    path.write_bytes(path.read_bytes()[:size])
    with pytest.raises(CheckpointError) as raised:
        checkpoint.load_checkpoint(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: checkpoint is truncated or corrupt (")
    assert message.endswith("); delete it to restart the run from epoch 1")
    assert "\n" not in message
    assert raised.value.exit_code == 2


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoint.pt"
    torch.save({"format_version": 1, "complete": False, "trainer": RunsCode()}, path)
    with pytest.raises(CheckpointError) as raised:
        checkpoint.load_checkpoint(path)
    assert str(raised.value).startswith(f"{path}: refused to load, the file holds objects other than tensors (")
    assert str(raised.value).endswith("); delete it to restart the run from epoch 1")
    assert not (tmp_path / "PWNED").exists()


def test_other_format_version(tmp_path, trained_state):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format_version": 2, "complete": False, "trainer": trained_state}, path)
    with pytest.raises(CheckpointError) as raised:
        checkpoint.load_checkpoint(path)
    assert str(raised.value) == (
        f"{path}: checkpoint format version 2 is not supported, expected 1; "
        "resume the run with the fmnist release that started it"
    )


def test_model_weights_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(build_model().state_dict(), path)
    with pytest.raises(CheckpointError) as raised:
        checkpoint.load_checkpoint(path)
    assert str(raised.value) == (
        f"{path}: checkpoint format version None is not supported, expected 1; "
        "resume the run with the fmnist release that started it"
    )


def test_missing_trainer_keys(tmp_path, trained_state):
    path = tmp_path / "checkpoint.pt"
    del trained_state["optimizer"]
    del trained_state["loader_rng"]
    torch.save({"format_version": 1, "complete": False, "trainer": trained_state}, path)
    with pytest.raises(CheckpointError) as raised:
        checkpoint.load_checkpoint(path)
    assert str(raised.value) == (
        f"{path}: checkpoint is missing optimizer, loader_rng; the file is damaged, delete it to restart the run from "
        "epoch 1"
    )


def save_as_if_on_gpu(value, path: Path, monkeypatch) -> None:
    """Save ``value`` with every storage tagged "cuda:0", as torch.save does for tensors on the first GPU."""
    import torch.serialization

    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(value, path)
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))
    assert b"cuda:0" in pickled


def test_checkpoint_saved_on_gpu_loads_on_cpu(tmp_path, trained_state, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_as_if_on_gpu({"format_version": 1, "complete": False, "trainer": trained_state}, path, monkeypatch)
    if not torch.cuda.is_available():
        # Without map_location the storages would be restored on the GPU.
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)

    loaded = checkpoint.load_checkpoint(path)
    assert_same_state(trained_state, loaded["trainer"])


def test_remove_temporary_files(tmp_path):
    (tmp_path / ".checkpoint.pt.abc123.part").write_bytes(b"half")
    (tmp_path / ".model.safetensors.x.part").write_bytes(b"")
    (tmp_path / "checkpoint.pt").write_bytes(b"keep")
    (tmp_path / "notes.part").write_bytes(b"keep")
    removed = checkpoint.remove_temporary_files(tmp_path)
    assert [path.name for path in removed] == [".checkpoint.pt.abc123.part", ".model.safetensors.x.part"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.pt", "notes.part"]


# --- config.json -------------------------------------------------------------------------


DATA = {
    "files": [{"name": f"file{index}", "md5": f"{index:032x}"} for index in range(4)],
    "split_sizes": {"train": 360, "val": 40, "test": 100},
    "val_indices_sha256": "ab" * 32,
    "normalisation": {"mean": 0.1335, "std": 0.2134},
}


def test_run_config_round_trip(tmp_path):
    config = TrainConfig(data_dir=tmp_path / "data", output_dir=tmp_path / "run", seed=5, betas=(0.8, 0.99), threads=2)
    checkpoint.write_run_config(tmp_path, config, DATA)
    stored = checkpoint.read_run_config(tmp_path)
    assert stored.config == config
    assert stored.data == DATA


def test_run_config_missing(tmp_path):
    with pytest.raises(CheckpointError) as raised:
        checkpoint.read_run_config(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path / 'config.json'}: not found, so {tmp_path} cannot be resumed; it was not written by "
        "'fmnist train', or the run was killed before it started; start a new run"
    )


def test_run_config_damaged(tmp_path):
    (tmp_path / "config.json").write_text('{"format_version": 1, "config": {')
    with pytest.raises(CheckpointError) as raised:
        checkpoint.read_run_config(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path / 'config.json'}: run configuration cannot be read (")


def test_run_config_unknown_setting(tmp_path):
    values = {**TrainConfig().to_dict(), "momentum": 0.9}
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "config": values, "data": DATA}))
    with pytest.raises(CheckpointError) as raised:
        checkpoint.read_run_config(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path / 'config.json'}: unknown settings momentum; resume the run with the fmnist release that started it"
    )


def test_run_config_other_version(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 7, "config": {}, "data": {}}))
    with pytest.raises(CheckpointError) as raised:
        checkpoint.read_run_config(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path / 'config.json'}: format version 7 is not supported, expected 1; "
        "resume the run with the fmnist release that started it"
    )


# --- settings of a resumed run ---------------------------------------------------------


def test_resume_config_takes_overrides(tmp_path):
    stored = TrainConfig(data_dir=tmp_path / "old", output_dir=tmp_path / "run", epochs=6, threads=None)
    given = {"data_dir": tmp_path / "new", "threads": 1, "offline": True, "epochs": 6, "output_dir": tmp_path / "run"}
    config = checkpoint.resume_config(stored, given, tmp_path / "run")
    assert config.data_dir == tmp_path / "new"
    assert config.threads == 1
    assert config.offline is True
    assert config.epochs == 6
    assert config.output_dir == tmp_path / "run"
    assert stored.data_dir == tmp_path / "old"


def test_resume_config_lists_every_difference(tmp_path):
    stored = TrainConfig(lr=1e-3, batch_size=128, preset=None)
    given = {"lr": 0.01, "batch_size": 128, "preset": "best", "val_fraction": 0.2}
    with pytest.raises(ConfigError) as raised:
        checkpoint.resume_config(stored, given, tmp_path)
    assert str(raised.value) == (
        f"--resume {tmp_path}: options differ from the configuration in {tmp_path / 'config.json'}: "
        "--lr 0.01 (the run has 0.001), --preset best (the run has None), --val-fraction 0.2 (the run has 0.1); "
        "leave them out to continue the run, or start a new run with --output-dir"
    )


def test_other_data_files_are_refused(tmp_path):
    found = json.loads(json.dumps(DATA))
    found["files"][1]["md5"] = "f" * 32
    with pytest.raises(ConfigError) as raised:
        checkpoint.check_same_data(DATA, found, tmp_path, tmp_path / "data")
    assert str(raised.value) == (
        f"{tmp_path / 'data' / 'file1'}: MD5 {'f' * 32} differs from {1:032x}, the MD5 that "
        f"{tmp_path / 'config.json'} records; pass --data-dir with the data that the run started with"
    )


def test_other_normalisation_is_refused(tmp_path):
    found = json.loads(json.dumps(DATA))
    found["normalisation"]["std"] = 0.25
    with pytest.raises(CheckpointError) as raised:
        checkpoint.check_same_data(DATA, found, tmp_path, tmp_path / "data")
    assert str(raised.value) == (
        f"{tmp_path / 'config.json'}: normalisation is {{'mean': 0.1335, 'std': 0.25}} for the same data files, "
        "but the run started with {'mean': 0.1335, 'std': 0.2134}; resume the run with the fmnist release that "
        "started it"
    )


def test_same_data_is_accepted(tmp_path):
    checkpoint.check_same_data(DATA, json.loads(json.dumps(DATA)), tmp_path, tmp_path / "data")
