"""End-to-end tests of 'fmnist train --resume': interrupted runs, killed processes, refused resumes.

Each interrupted run is compared with one uninterrupted run of the same configuration
and seed: on a CPU the two must end bit-identical.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fmnist import checkpoint, model_io
from fmnist.cli import main
from fmnist.download import md5_of
from fmnist.train import Trainer
from synthetic import make_dataset

SRC_DIR = Path(__file__).resolve().parents[1] / "src"
# Files that only a run that has stopped training writes.
FINAL_FILES = {"model.safetensors", "model.json", "metrics.json", "history.json", "history.csv", "history.png"}
EPOCHS = 6
KILLED_AFTER = 3
# A low learning rate and strong dropout keep the losses of the synthetic data away
# from 0, so that any difference in the random streams shows in the history.
OPTIONS = [
    "--epochs", str(EPOCHS), "--batch-size", "32", "--lr", "0.0003", "--dropout", "0.5",
    "--patience", "10", "--seed", "7", "--threads", "1", "--offline", "--quiet",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The data directory and the run directory of one uninterrupted run."""
    root = tmp_path_factory.mktemp("resume")
    data_dir = make_dataset(root / "data")
    run_dir = root / "uninterrupted"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        assert main(["train", "--data-dir", str(data_dir), "--output-dir", str(run_dir), *OPTIONS]) == 0
    return data_dir, run_dir


def train_args(data_dir: Path, run_dir: Path) -> list[str]:
    return ["train", "--data-dir", str(data_dir), "--output-dir", str(run_dir), *OPTIONS]


def history_without_seconds(run_dir: Path) -> list[dict]:
    records = json.loads((run_dir / "history.json").read_text())
    return [{key: value for key, value in record.items() if key != "seconds"} for record in records]


def assert_same_run(expected: Path, actual: Path) -> None:
    """Assert that two run directories hold the same files, history, weights and metrics."""
    assert sorted(path.name for path in actual.iterdir()) == sorted(path.name for path in expected.iterdir())
    assert history_without_seconds(actual) == history_without_seconds(expected)

    expected_weights = load_file(expected / "model.safetensors")
    actual_weights = load_file(actual / "model.safetensors")
    assert sorted(actual_weights) == sorted(expected_weights)
    for key, tensor in expected_weights.items():
        assert torch.equal(actual_weights[key], tensor), key
    assert (actual / "model.safetensors").read_bytes() == (expected / "model.safetensors").read_bytes()

    assert json.loads((actual / "metrics.json").read_text()) == json.loads((expected / "metrics.json").read_text())
    expected_metadata = json.loads((expected / "model.json").read_text())
    actual_metadata = json.loads((actual / "model.json").read_text())
    for key in ("best_epoch", "epochs_run", "stop_reason", "metrics", "normalisation", "split_sizes", "data_files"):
        assert actual_metadata[key] == expected_metadata[key], key


def checkpoint_epoch(run_dir: Path) -> int:
    return checkpoint.load_checkpoint(run_dir / "checkpoint.pt")["trainer"]["epoch"]


def interrupt_after_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make the checkpoint hook raise KeyboardInterrupt once the checkpoint of ``epoch`` is on disk."""
    original = checkpoint.save_checkpoint

    def save_then_interrupt(path, trainer_state, *, complete=False):
        original(path, trainer_state, complete=complete)
        if trainer_state["epoch"] == epoch and not complete:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_interrupt)


# --- interrupted in-process with Ctrl-C --------------------------------------------------


def test_interrupted_after_epoch_3_resumes_identically(reference, tmp_path, monkeypatch, capsys):
    data_dir, expected = reference
    run_dir = tmp_path / "run"
    interrupt_after_epoch(monkeypatch, KILLED_AFTER)

    assert main(train_args(data_dir, run_dir)) == 130
    assert capsys.readouterr().err == (
        f"Interrupted; continue the run from its last checkpoint with: fmnist train --resume {run_dir}\n"
        "error: interrupted\n"
    )
    names = {path.name for path in run_dir.iterdir()}
    assert {"checkpoint.pt", "config.json", "train.log"} <= names
    assert not names & FINAL_FILES
    assert checkpoint_epoch(run_dir) == KILLED_AFTER

    monkeypatch.undo()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert_same_run(expected, run_dir)
    log = (run_dir / "train.log").read_text()
    assert f"Resuming {run_dir} after epoch 3 from checkpoint.pt" in log
    assert log.count(" epoch 4/6 ") == 1
    assert log.count(" epoch 3/6 ") == 1


def test_resume_json_summary(reference, tmp_path, monkeypatch, capsys):
    data_dir, expected = reference
    run_dir = tmp_path / "run"
    interrupt_after_epoch(monkeypatch, 2)
    assert main(train_args(data_dir, run_dir)) == 130
    monkeypatch.undo()
    capsys.readouterr()

    assert main(["train", "--resume", str(run_dir), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    metadata = json.loads((expected / "model.json").read_text())
    assert summary["run_dir"] == str(run_dir)
    assert summary["epochs_run"] == EPOCHS
    assert summary["best_epoch"] == metadata["best_epoch"]
    assert summary["test_accuracy"] == metadata["metrics"]["test_accuracy"]


def test_interrupted_in_epoch_1_starts_again(reference, tmp_path, monkeypatch, capsys):
    data_dir, expected = reference
    run_dir = tmp_path / "run"

    def interrupted_epoch(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_epoch)
    assert main(train_args(data_dir, run_dir)) == 130
    names = {path.name for path in run_dir.iterdir()}
    assert {"config.json", "train.log"} <= names
    assert "checkpoint.pt" not in names
    assert not names & FINAL_FILES

    monkeypatch.undo()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert f"Resuming {run_dir}: no epoch was completed, so training starts at epoch 1" in (run_dir / "train.log").read_text()
    assert_same_run(expected, run_dir)


def test_interrupted_while_saving_model_finishes_without_training(reference, tmp_path, monkeypatch, capsys):
    data_dir, expected = reference
    run_dir = tmp_path / "run"

    def interrupted_save(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model_io, "save_model", interrupted_save)
    assert main(train_args(data_dir, run_dir)) == 130
    assert capsys.readouterr().err == (
        f"Interrupted; continue the run from its last checkpoint with: fmnist train --resume {run_dir}\n"
        "error: interrupted\n"
    )
    assert not (run_dir / "model.safetensors").exists()
    assert checkpoint_epoch(run_dir) == EPOCHS

    monkeypatch.undo()
    log_before = (run_dir / "train.log").read_text()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    new_log = (run_dir / "train.log").read_text()[len(log_before):]
    assert not re.search(r"INFO epoch \d+/6 ", new_log)
    assert f"Resuming {run_dir} after epoch 6 from checkpoint.pt" in new_log
    assert_same_run(expected, run_dir)


def test_rng_not_restored_diverges(reference, tmp_path, monkeypatch):
    # A check that the comparison above can fail: a resume that loses the loader's
    # random state shuffles differently and ends with another history.
    data_dir, expected = reference
    run_dir = tmp_path / "run"
    interrupt_after_epoch(monkeypatch, KILLED_AFTER)
    assert main(train_args(data_dir, run_dir)) == 130
    monkeypatch.undo()

    original = Trainer.load_state_dict

    def load_without_loader_rng(self, state):
        original(self, state)
        self.generator.manual_seed(12345)

    monkeypatch.setattr(Trainer, "load_state_dict", load_without_loader_rng)
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    resumed = history_without_seconds(run_dir)
    reference_history = history_without_seconds(expected)
    assert resumed[:KILLED_AFTER] == reference_history[:KILLED_AFTER]
    assert resumed[KILLED_AFTER]["train_loss"] != reference_history[KILLED_AFTER]["train_loss"]


# --- killed with SIGKILL in a separate process -------------------------------------------

# Runs the command line in a child process that stops at a chosen moment, writes a
# marker file and waits there to be killed. "after": once the checkpoint of epoch 3 is
# on disk. "during": while writing the checkpoint of epoch 3, after its temporary file
# was written and before the rename.
KILLABLE_TRAIN = textwrap.dedent(
    """
    import os
    import sys
    import time
    from pathlib import Path

    from fmnist import checkpoint
    from fmnist.cli import main

    mode, marker = sys.argv[1], Path(sys.argv[2])

    def wait_to_be_killed():
        marker.write_text(str(os.getpid()))
        time.sleep(600)

    if mode == "after":
        original_save = checkpoint.save_checkpoint

        def save_then_wait(path, trainer_state, *, complete=False):
            original_save(path, trainer_state, complete=complete)
            if trainer_state["epoch"] == 3:
                wait_to_be_killed()

        checkpoint.save_checkpoint = save_then_wait
    else:
        original_replace = os.replace
        renames = []

        def replace_or_wait(source, target):
            if Path(target).name == "checkpoint.pt":
                renames.append(target)
                if len(renames) == 3:
                    wait_to_be_killed()
            return original_replace(source, target)

        os.replace = replace_or_wait

    sys.exit(main(sys.argv[3:]))
    """
)


def kill_training(tmp_path: Path, mode: str, args: list[str]) -> None:
    """Start training in a child process, wait until it reaches ``mode``'s moment, and SIGKILL it."""
    script = tmp_path / "killable_train.py"
    script.write_text(KILLABLE_TRAIN)
    marker = tmp_path / "ready-to-kill"
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR), "XDG_CACHE_HOME": str(tmp_path / "child-cache")}
    child = subprocess.Popen(
        [sys.executable, str(script), mode, str(marker), *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"training ended with {child.returncode} before it could be killed: {child.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("training did not reach the moment to be killed within 120 s")
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()


def test_sigkill_after_epoch_3_resumes_identically(reference, tmp_path):
    data_dir, expected = reference
    run_dir = tmp_path / "run"
    kill_training(tmp_path, "after", train_args(data_dir, run_dir))
    assert checkpoint_epoch(run_dir) == 3
    assert not list(run_dir.glob(".*.part"))

    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert_same_run(expected, run_dir)


def test_sigkill_during_checkpoint_write_resumes_from_epoch_2(reference, tmp_path):
    data_dir, expected = reference
    run_dir = tmp_path / "run"
    kill_training(tmp_path, "during", train_args(data_dir, run_dir))
    leftovers = list(run_dir.glob(".checkpoint.pt.*.part"))
    assert len(leftovers) == 1
    assert checkpoint_epoch(run_dir) == 2

    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert not leftovers[0].exists()
    log = (run_dir / "train.log").read_text()
    assert f"Removed {leftovers[0]}, a temporary file that the interrupted run left" in log
    assert f"Resuming {run_dir} after epoch 2 from checkpoint.pt" in log
    assert_same_run(expected, run_dir)


# --- resumes that are refused ---------------------------------------------------------


def test_complete_run_is_refused(reference, capsys):
    _, run_dir = reference
    files_before = {path.name: path.stat().st_mtime_ns for path in run_dir.iterdir()}
    assert main(["train", "--resume", str(run_dir)]) == 2
    stop_reason = json.loads((run_dir / "model.json").read_text())["stop_reason"]
    assert capsys.readouterr().err == (
        f"error: --resume {run_dir}: the run is already complete (stopped after epoch 6: {stop_reason}); "
        "to train further, start a new run with --output-dir\n"
    )
    assert {path.name: path.stat().st_mtime_ns for path in run_dir.iterdir()} == files_before


def test_conflicting_options_are_refused(reference, tmp_path, monkeypatch, capsys):
    data_dir, _ = reference
    run_dir = tmp_path / "run"
    interrupt_after_epoch(monkeypatch, 1)
    assert main(train_args(data_dir, run_dir)) == 130
    monkeypatch.undo()
    capsys.readouterr()

    code = main(["train", "--resume", str(run_dir), "--epochs", "8", "--betas", "0.8", "0.99", "--seed", "7",
                 "--output-dir", str(tmp_path / "other")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: --resume {run_dir}: options differ from the configuration in {run_dir / 'config.json'}: "
        f"--output-dir {tmp_path / 'other'} (the run directory is {run_dir}), --epochs 8 (the run has 6), "
        "--betas 0.8 0.99 (the run has 0.9 0.999); leave them out to continue the run, or start a new run "
        "with --output-dir\n"
    )
    assert checkpoint_epoch(run_dir) == 1


def test_same_values_and_overrides_are_accepted(reference, tmp_path, monkeypatch):
    data_dir, expected = reference
    run_dir = tmp_path / "run"
    interrupt_after_epoch(monkeypatch, KILLED_AFTER)
    assert main(train_args(data_dir, run_dir)) == 130
    monkeypatch.undo()

    # Every option of the original command, including --output-dir and --data-dir.
    assert main([*train_args(data_dir, run_dir), "--resume", str(run_dir)]) == 0
    assert_same_run(expected, run_dir)


def test_missing_run_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == (
        f"error: --resume {tmp_path / 'nowhere'}: no such run directory; pass a directory written by 'fmnist train'\n"
    )


def test_directory_without_config(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("")
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir / 'config.json'}: not found, so {run_dir} cannot be resumed; it was not written by "
        "'fmnist train', or the run was killed before it started; start a new run\n"
    )


def test_other_data_is_refused(reference, tmp_path, monkeypatch, capsys):
    data_dir, _ = reference
    run_dir = tmp_path / "run"
    interrupt_after_epoch(monkeypatch, 1)
    assert main(train_args(data_dir, run_dir)) == 130
    monkeypatch.undo()
    capsys.readouterr()

    other_data = make_dataset(tmp_path / "other-data", seed=1)
    code = main(["train", "--resume", str(run_dir), "--data-dir", str(other_data), "--quiet"])
    assert code == 2
    stored = json.loads((run_dir / "config.json").read_text())["data"]["files"][0]["md5"]
    found = md5_of(other_data / "train-images-idx3-ubyte.gz")
    assert capsys.readouterr().err == (
        f"error: {other_data / 'train-images-idx3-ubyte.gz'}: MD5 {found} differs from {stored}, the MD5 that "
        f"{run_dir / 'config.json'} records; pass --data-dir with the data that the run started with\n"
    )
    assert checkpoint_epoch(run_dir) == 1


def test_truncated_checkpoint_is_refused(reference, tmp_path, monkeypatch, capsys):
    data_dir, _ = reference
    run_dir = tmp_path / "run"
    interrupt_after_epoch(monkeypatch, 1)
    assert main(train_args(data_dir, run_dir)) == 130
    monkeypatch.undo()
    capsys.readouterr()

    path = run_dir / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:5000])
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: checkpoint is truncated or corrupt (")
    assert err.endswith("); delete it to restart the run from epoch 1\n")
    assert err.count("\n") == 1


def test_deleted_checkpoint_restarts_identically(reference, tmp_path, monkeypatch):
    data_dir, expected = reference
    run_dir = tmp_path / "run"
    interrupt_after_epoch(monkeypatch, 2)
    assert main(train_args(data_dir, run_dir)) == 130
    monkeypatch.undo()

    (run_dir / "checkpoint.pt").unlink()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert_same_run(expected, run_dir)


def test_changed_split_is_refused(reference, tmp_path, monkeypatch, capsys):
    # Same data files, but config.json records another val split: the split would differ.
    data_dir, _ = reference
    run_dir = tmp_path / "run"
    interrupt_after_epoch(monkeypatch, 1)
    assert main(train_args(data_dir, run_dir)) == 130
    monkeypatch.undo()
    capsys.readouterr()

    config_path = run_dir / "config.json"
    stored = json.loads(config_path.read_text())
    found_digest = stored["data"]["val_indices_sha256"]
    stored["data"]["val_indices_sha256"] = "0" * 64
    config_path.write_text(json.dumps(stored))
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"error: {config_path}: val_indices_sha256 is {found_digest} for the same data files, but the run "
        f"started with {'0' * 64}; resume the run with the fmnist release that started it\n"
    )
