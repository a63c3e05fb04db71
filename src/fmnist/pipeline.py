"""The main job: prepare data, train, evaluate on test and write the run directory."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist import artifacts, checkpoint, config_file, data, metrics, tensorboard_log
from fmnist.config import TrainConfig
from fmnist.datasets import FASHION_MNIST
from fmnist.errors import CheckpointError, ConfigError, FmnistError, TrainingError

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
HISTORY_PLOT = "history.png"
CONFUSION_PLOT = "confusion_matrix.png"
CHECKPOINT_FILE = checkpoint.CHECKPOINT_FILE
LOG_FILE = "train.log"


class _RecordBuffer(logging.Handler):
    """Log records kept in memory until the run directory exists to hold them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def buffered_log():
    """Collect the package's INFO log records while the block runs, and yield the list."""
    package_logger = logging.getLogger("fmnist")
    buffer = _RecordBuffer()
    previous_level = package_logger.level
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)
    package_logger.addHandler(buffer)
    try:
        yield buffer.records
    finally:
        package_logger.removeHandler(buffer)
        package_logger.setLevel(previous_level)


@contextlib.contextmanager
def run_log(run_dir: Path, earlier_records: list[logging.LogRecord] = ()):
    """Copy the package's INFO log records into ``run_dir/train.log`` while the block runs.

    ``earlier_records`` (from :func:`buffered_log`) are written first, so the log also
    covers the checks and data loading that ran before the run directory existed.
    """
    package_logger = logging.getLogger("fmnist")
    # Paths that are not valid UTF-8 reach the messages as surrogate escapes, which strict
    # UTF-8 cannot encode, so backslashreplace writes them as \udcff and so on.
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8", errors="backslashreplace")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for record in earlier_records:
        handler.handle(record)
    previous_level = package_logger.level
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)
    package_logger.addHandler(handler)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)
        handler.close()


@contextlib.contextmanager
def resume_hint(run_dir: Path):
    """Log how to continue the run in ``run_dir`` when Ctrl-C interrupts the block."""
    try:
        yield
    except KeyboardInterrupt:
        logger.warning("Interrupted; continue the run from its last checkpoint with: fmnist train --resume %s", run_dir)
        raise


def prepare_data_dir(data_dir: Path | None, *, offline: bool, show_progress: bool = False) -> Path:
    """Resolve the data directory and make sure it contains the four files, downloading unless offline.

    A directory that contains Kaggle's two CSV files instead of the four IDX files is
    used as it is, without downloading.
    """
    from fmnist import csv_data, download

    resolved = download.resolve_data_dir(data_dir)
    if csv_data.csv_files_to_use(resolved) is not None:
        return resolved
    if offline:
        data.require_data_files(resolved)
        return resolved
    # load_split logs each unofficial file when it loads it, so the download step logs it at DEBUG.
    download.download_dataset(
        resolved, FASHION_MNIST, show_progress=show_progress, validate=_validate_with_cache, log_supplied=False
    )
    return resolved


def _validate_with_cache(path: Path) -> None:
    # Validating a user-supplied file means decompressing it; building the cache does
    # that once and later runs find the cache under the same digest.
    spec_file = next(f for f in FASHION_MNIST.files if path.name.removesuffix(".gz") == f.name.removesuffix(".gz"))
    data.load_cached(path, spec_file.kind, spec_file.md5, data._cache_dir_for(path.parent))


def choose_run_dir(output_dir: Path | None) -> Path:
    """Return the run directory to create: ``output_dir`` if given (it must be empty), else ``runs/<timestamp>``.

    Nothing is created yet, so that invalid input found later leaves no directory behind.
    """
    if output_dir is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        output_dir = Path("runs") / stamp
        suffix = 1
        while output_dir.exists():
            suffix += 1
            output_dir = Path("runs") / f"{stamp}-{suffix}"
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ConfigError(
            f"--output-dir {output_dir} already exists and is not empty; choose a new directory "
            f"or continue it with --resume {output_dir}"
        )
    return output_dir


@dataclass
class PreparedData:
    """The datasets of one run and the facts about them that the run directory records."""

    train_set: Any
    val_set: Any
    test_set: Any
    mean: float
    std: float
    data_files: list[dict[str, Any]]


def load_datasets(data_dir: Path, config: TrainConfig) -> PreparedData:
    """Memory-map both splits, split train into train and val, and compute the normalisation."""
    from fmnist.loading import FashionMNISTDataset

    train_split = data.load_split(data_dir, "train")
    test_split = data.load_split(data_dir, "test")
    train_indices, val_indices = data.stratified_split(train_split.labels, config.val_fraction, config.seed)
    mean, std = data.pixel_stats(train_split.images, train_indices)

    def dataset(split, indices=None):
        return FashionMNISTDataset(split.images, split.labels, indices, mean=mean, std=std)

    data_files = [
        {"name": source.path.name, "path": str(source.path.resolve()), "md5": source.md5, "official": source.official}
        for source in (*train_split.sources, *test_split.sources)
    ]
    return PreparedData(
        train_set=dataset(train_split, train_indices),
        val_set=dataset(train_split, val_indices),
        test_set=dataset(test_split),
        mean=mean,
        std=std,
        data_files=data_files,
    )


def software_versions() -> dict[str, str]:
    """Return the versions of Python, torch and numpy that made a run."""
    import numpy
    import torch

    from fmnist import __version__

    return {"fmnist": __version__, "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}


def build_metadata(config: TrainConfig, prepared: PreparedData, result, test_summary: dict | None) -> dict[str, Any]:
    """Return the contents of ``model.json``: how the saved weights were made."""
    from fmnist.model import ARCHITECTURE, HIDDEN_FEATURES, INPUT_FEATURES, NUM_CLASSES

    return {
        "format_version": artifacts.FORMAT_VERSION,
        "architecture": {
            "name": ARCHITECTURE,
            "input_features": INPUT_FEATURES,
            "hidden_features": list(HIDDEN_FEATURES),
            "num_classes": NUM_CLASSES,
            "activation": "relu",
            "dropout": config.dropout,
            "output": "logits",
        },
        "normalisation": {"mean": prepared.mean, "std": prepared.std, "pixel_scale": 255.0},
        "class_names": list(FASHION_MNIST.class_names),
        "config": config.to_dict(),
        "seed": config.seed,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stop_reason": result.stop_reason,
        "metrics": {
            "best_val_loss": result.best_val_loss if result.best_epoch else None,
            "test_accuracy": test_summary["accuracy"] if test_summary else None,
            "test_macro_f1": test_summary["macro_f1"] if test_summary else None,
        },
        "data_files": prepared.data_files,
        "split_sizes": {"train": len(prepared.train_set), "val": len(prepared.val_set), "test": len(prepared.test_set)},
        "software": software_versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (default: every CPU this process may use) and return it."""
    import torch

    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        # torchrun starts LOCAL_WORLD_SIZE processes on this machine, which share its CPUs.
        threads = max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    return threads


def train(config: TrainConfig, *, progress: bool = False, tensorboard: bool = False) -> dict[str, Any] | None:
    """Run the main job and return a summary. The run directory contains everything it wrote.

    Under torchrun, processes of rank 1 and higher train without writing and return None.

    Raises TrainingError after writing the run directory when the loss became non-finite.
    """
    from fmnist import distributed
    from fmnist.train import check_batch_size

    started = time.perf_counter()
    config.validate()
    device = distributed.resolve_device(config.device)
    group = distributed.init_process_group(device)
    device = distributed.device_for(group, device)
    try:
        # Every process checks the options and the data; none starts training unless all
        # passed, because the others would wait for it forever.
        with buffered_log() as early_records:
            failure = None
            try:
                if tensorboard:
                    tensorboard_log.require_tensorboard()
                run_dir = choose_run_dir(config.output_dir) if group.is_main else None
                threads = set_threads(config.threads)
                data_dir = prepare_data_dir(config.data_dir, offline=config.offline, show_progress=progress)
                # An absolute path, so that --resume finds the data from any working directory.
                config.data_dir = data_dir.absolute()

                # Options that need the data (the val split, the batch size) are checked before
                # the run directory exists, so invalid input leaves nothing behind.
                prepared = load_datasets(data_dir, config)
                check_batch_size(config.batch_size, len(prepared.train_set))
                if group.is_distributed:
                    distributed.per_process_batch_size(config.batch_size, group.world_size)
            except FmnistError as error:
                failure = error
        if not distributed.all_succeeded(failure is None, group, device):
            raise failure or TrainingError("another training process failed its checks; see its error above")

        if not group.is_main:
            _train_worker(prepared, config, device, group)
            return None
        return _train_main(
            run_dir, prepared, threads, config, progress, started, tensorboard, device, group, early_records
        )
    finally:
        distributed.destroy_process_group()


def _train_worker(prepared: PreparedData, config: TrainConfig, device, group) -> None:
    """Train as a process of rank 1 or higher: the same steps as rank 0, writing nothing."""
    import torch

    from fmnist.model import build_model
    from fmnist.train import Trainer

    torch.manual_seed(config.seed)
    trainer = Trainer(build_model(config.dropout), config, prepared.train_set, prepared.val_set, device=device, group=group)
    trainer.fit()


def _train_main(
    run_dir: Path,
    prepared: PreparedData,
    threads: int,
    config: TrainConfig,
    progress: bool,
    started: float,
    tensorboard: bool,
    device,
    group,
    early_records: list[logging.LogRecord],
) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    config.output_dir = run_dir
    checkpoint.write_run_config(run_dir, config, checkpoint.data_facts(prepared))
    config_file.write_config_file(run_dir / config_file.CONFIG_TOML, config)
    with run_log(run_dir, early_records), resume_hint(run_dir):
        return _train_into(
            run_dir, prepared, threads, config, progress, started, tensorboard=tensorboard, device=device, group=group
        )


def resume(
    run_dir: Path, given_settings: dict[str, Any], *, progress: bool = False, tensorboard: bool = False
) -> dict[str, Any]:
    """Continue the interrupted run in ``run_dir`` after its last completed epoch and return its summary.

    The configuration comes from the run's ``config.json``. ``given_settings`` contains the
    settings given on the command line, by TrainConfig field name: only the data directory,
    ``offline`` and ``threads`` may differ from the stored ones (see
    :func:`fmnist.checkpoint.resume_config`). A run killed before its first checkpoint
    starts again at epoch 1. Raises ConfigError when the run is already complete.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"--resume {run_dir}: no such run directory; pass a directory written by 'fmnist train'")
    stored = checkpoint.read_run_config(run_dir)
    config = checkpoint.resume_config(stored.config, given_settings, run_dir)
    config.validate()
    from fmnist import distributed

    if distributed.launched_by_torchrun():
        raise ConfigError(f"--resume {run_dir}: resuming runs in a single process; start it without torchrun")
    device = distributed.resolve_device(config.device)
    if tensorboard:
        tensorboard_log.require_tensorboard()
    state = checkpoint.load_checkpoint(run_dir / CHECKPOINT_FILE)
    if state is not None and state["complete"]:
        trainer_state = state["trainer"]
        raise ConfigError(
            f"--resume {run_dir}: the run is already complete (stopped after epoch {trainer_state['epoch']}: "
            f"{trainer_state['stop_reason']}); to train further, start a new run with --output-dir"
        )

    with buffered_log() as early_records:
        threads = set_threads(config.threads)
        data_dir = prepare_data_dir(config.data_dir, offline=config.offline, show_progress=progress)
        config.data_dir = data_dir.absolute()
        prepared = load_datasets(data_dir, config)
        checkpoint.check_same_data(stored.data, checkpoint.data_facts(prepared), run_dir, data_dir)

    with run_log(run_dir, early_records), resume_hint(run_dir):
        for path in checkpoint.remove_temporary_files(run_dir):
            logger.info("Removed %s, a temporary file that the interrupted run left", path)
        if state is None:
            logger.info("Resuming %s: no epoch was completed, so training starts at epoch 1", run_dir)
        else:
            logger.info("Resuming %s after epoch %d from %s", run_dir, state["trainer"]["epoch"], CHECKPOINT_FILE)
        return _train_into(
            run_dir, prepared, threads, config, progress, started, state and state["trainer"],
            tensorboard=tensorboard, device=device,
        )


def _train_into(
    run_dir: Path,
    prepared: PreparedData,
    threads: int,
    config: TrainConfig,
    progress: bool,
    started: float,
    trainer_state: dict[str, Any] | None = None,
    tensorboard: bool = False,
    device=None,
    group=None,
) -> dict[str, Any]:
    import torch

    from fmnist import history as history_io
    from fmnist import misclassified, model_io, plots, report
    from fmnist.model import build_model
    from fmnist.train import Trainer, evaluate_model, plural

    device = device or torch.device("cpu")
    processes = f", {group.world_size} processes ({group.backend})" if group and group.is_distributed else ""
    logger.info(
        "Run directory %s, data %s, device %s, %s%s", run_dir, config.data_dir, device, plural(threads, "thread"), processes
    )
    logger.info("Configuration: %s", config.to_dict())
    logger.info(
        "Splits: train %d, val %d, test %d; normalisation mean %.4f std %.4f",
        len(prepared.train_set), len(prepared.val_set), len(prepared.test_set), prepared.mean, prepared.std,
    )

    torch.manual_seed(config.seed)
    model = build_model(config.dropout)
    checkpoint_path = run_dir / CHECKPOINT_FILE

    def save_checkpoint(trainer: Trainer) -> None:
        checkpoint.save_checkpoint(checkpoint_path, trainer.state_dict())

    on_epoch_end = tensorboard_log.epoch_callback(run_dir, then=save_checkpoint) if tensorboard else save_checkpoint
    trainer = Trainer(
        model, config, prepared.train_set, prepared.val_set,
        progress=progress, on_epoch_end=on_epoch_end, device=device, group=group,
    )
    if trainer_state is not None:
        restore_trainer(trainer, trainer_state, checkpoint_path)
    result = trainer.fit()

    test_summary = None
    if result.best_epoch:
        evaluation = evaluate_model(
            result.model, prepared.test_set, keep_probabilities=True, device=device, precision=config.precision
        )
        test_summary = metrics.summarize(evaluation.labels, evaluation.predictions, FASHION_MNIST.class_names)
        test_summary["loss"] = evaluation.loss
        artifacts.atomic_write_json(run_dir / METRICS_FILE, {"split": "test", **test_summary})
        plots.plot_confusion_matrix(test_summary["confusion_matrix"], FASHION_MNIST.class_names, run_dir / CONFUSION_PLOT)
        metadata = build_metadata(config, prepared, result, test_summary)
        metadata["seconds"] = time.perf_counter() - started  # wall time from the start to the saved model
        metadata["device"] = str(device)
        if trainer.shards is not None:
            metadata["distributed"] = trainer.shards
        model_io.save_model(run_dir, result.model, metadata)
        misclassified.save_misclassified(run_dir, evaluation, prepared.test_set)

    history_io.write_history(run_dir, result.history)
    plots.plot_history(result.history, run_dir / HISTORY_PLOT, result.best_epoch or None, config.label_smoothing)
    seconds = time.perf_counter() - started
    report.write_report_after_training(run_dir)
    # Written last, because a complete checkpoint marks for --resume that every file above
    # exists. Its model entry contains the restored best weights.
    checkpoint.save_checkpoint(checkpoint_path, trainer.state_dict(), complete=True)

    if result.error is not None:
        raise result.error
    logger.info(
        "Test accuracy %.4f, macro-F1 %.4f (best epoch %d of %d) in %.1fs; wrote %s",
        test_summary["accuracy"], test_summary["macro_f1"], result.best_epoch, len(result.history), seconds, run_dir,
    )
    return {
        "run_dir": str(run_dir),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stop_reason": result.stop_reason,
        "best_val_loss": result.best_val_loss,
        "test_accuracy": test_summary["accuracy"],
        "test_macro_f1": test_summary["macro_f1"],
        "seconds": seconds,
    }


def restore_trainer(trainer, trainer_state: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's trainer state into ``trainer``, raising CheckpointError when it does not fit."""
    try:
        trainer.load_state_dict(trainer_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: checkpoint does not fit the run's model and configuration ({first_line}); "
            f"delete it to restart the run from epoch 1"
        ) from None


def evaluate(
    model_path: Path,
    *,
    data_dir: Path | None = None,
    offline: bool = False,
    plot_path: Path | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a saved model on the test split; write the confusion matrix PNG and return the metrics."""
    from fmnist import model_io, plots
    from fmnist.loading import FashionMNISTDataset
    from fmnist.train import evaluate_model

    model, metadata = model_io.load_model(model_path)
    resolved = prepare_data_dir(data_dir, offline=offline, show_progress=show_progress)
    test_split = data.load_split(resolved, "test")
    normalisation = metadata["normalisation"]
    test_set = FashionMNISTDataset(
        test_split.images, test_split.labels, mean=normalisation["mean"], std=normalisation["std"]
    )
    evaluation = evaluate_model(model, test_set)
    if not math.isfinite(evaluation.loss):
        raise artifacts.non_finite_outputs_error(model_path, "on the test split")
    summary = metrics.summarize(evaluation.labels, evaluation.predictions, metadata["class_names"])

    if plot_path is None:
        model_path = Path(model_path)
        plot_path = (model_path if model_path.is_dir() else model_path.parent) / CONFUSION_PLOT
    plots.plot_confusion_matrix(summary["confusion_matrix"], metadata["class_names"], Path(plot_path))
    return {
        "split": "test",
        "model": str(model_path),
        "data_dir": str(resolved),
        "loss": evaluation.loss,
        **summary,
        "confusion_matrix_png": str(plot_path),
    }
