"""Checkpoints and the stored configuration of a run, which ``fmnist train --resume`` reads.

``checkpoint.pt`` contains everything needed to continue a run after its last completed
epoch: model, optimizer, scheduler, early-stopping state, random-generator states and
history (see ``Trainer.state_dict``). It is rewritten after every epoch through a
temporary file and a rename, and read with ``torch.load(weights_only=True)``, which
builds only tensors and plain containers and so runs no code from the file.

``config.json`` is written before the first epoch. It contains the resolved
configuration and what identifies the data (file digests, split, normalisation), so
that a run killed at any moment resumes with the settings and the data it started with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist import artifacts
from fmnist.config import TrainConfig
from fmnist.errors import CheckpointError, ConfigError

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1

# The keys of Trainer.state_dict that a checkpoint must contain.
TRAINER_KEYS = (
    "epoch",
    "step",
    "model",
    "best_state",
    "optimizer",
    "scheduler",
    "early_stopping",
    "history",
    "torch_rng",
    "loader_rng",
    "stop_reason",
    "error_message",
)

# Settings that --resume accepts with a value other than the stored one: where the
# data is read from and how many threads run, not what is trained.
# NOTE: a different --threads can change the rounding of float sums, so a bit-identical
# continuation is tested only with the thread count that the run started with.
RESUME_OVERRIDES = ("data_dir", "offline", "threads")


def save_checkpoint(path: Path, trainer_state: dict[str, Any], *, complete: bool = False) -> None:
    """Write ``trainer_state`` to ``path`` through a flushed temporary file and a rename.

    ``complete`` marks a run whose run directory contains all its final files.
    """
    import torch

    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, "complete": complete, "trainer": trainer_state}, buffer)
    artifacts.atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """Read a checkpoint onto the CPU, or return None when ``path`` does not exist.

    Raises CheckpointError when the file contains objects other than tensors and plain
    containers, is truncated, or is missing a key that resuming needs.
    """
    from fmnist.model_io import load_weights_only

    path = Path(path)
    if not path.exists():
        return None

    restart = "delete it to restart the run from epoch 1"
    loaded = load_weights_only(path, "checkpoint", restart, restart)

    if not isinstance(loaded, dict) or loaded.get("format_version") != FORMAT_VERSION:
        version = loaded.get("format_version") if isinstance(loaded, dict) else None
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported, expected {FORMAT_VERSION}; "
            f"resume the run with the fmnist release that started it"
        )
    trainer_state = loaded.get("trainer")
    missing = [key for key in TRAINER_KEYS if not isinstance(trainer_state, dict) or key not in trainer_state]
    if missing or not isinstance(loaded.get("complete"), bool):
        raise CheckpointError(
            f"{path}: checkpoint is missing {', '.join(missing) or 'complete'}; the file is damaged, "
            f"delete it to restart the run from epoch 1"
        )
    return loaded


def remove_temporary_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files that a killed process left in ``run_dir`` and return their paths.

    Atomic writes name their temporary file ``.NAME.RANDOM.part``, so no other file matches.
    """
    removed = []
    for path in sorted(Path(run_dir).glob(".*.part")):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def data_facts(prepared: Any) -> dict[str, Any]:
    """Return what identifies the data of a run: file digests, split sizes, val indices digest, normalisation.

    ``prepared`` is a ``pipeline.PreparedData``.
    """
    val_indices = prepared.val_set.indices.astype("<i8").tobytes()
    return {
        "files": [{"name": entry["name"], "md5": entry["md5"]} for entry in prepared.data_files],
        "split_sizes": {"train": len(prepared.train_set), "val": len(prepared.val_set), "test": len(prepared.test_set)},
        "val_indices_sha256": hashlib.sha256(val_indices).hexdigest(),
        "normalisation": {"mean": prepared.mean, "std": prepared.std},
    }


def write_run_config(run_dir: Path, config: TrainConfig, data: dict[str, Any]) -> None:
    """Write ``config.json``: the resolved configuration and the facts of :func:`data_facts`."""
    value = {"format_version": FORMAT_VERSION, "config": config.to_dict(), "data": data}
    artifacts.atomic_write_json(Path(run_dir) / CONFIG_FILE, value)


@dataclass
class StoredRun:
    """The contents of ``config.json``."""

    config: TrainConfig
    data: dict[str, Any]


def read_run_config(run_dir: Path) -> StoredRun:
    """Read ``config.json`` of ``run_dir`` back into a TrainConfig and the data facts."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(
            f"{path}: not found, so {run_dir} cannot be resumed; it was not written by 'fmnist train', or the "
            f"run was killed before it started; start a new run"
        )
    stored = artifacts.read_json(path, "run configuration")
    if not isinstance(stored, dict) or stored.get("format_version") != FORMAT_VERSION:
        version = stored.get("format_version") if isinstance(stored, dict) else None
        raise CheckpointError(
            f"{path}: format version {version!r} is not supported, expected {FORMAT_VERSION}; "
            f"resume the run with the fmnist release that started it"
        )
    values = stored.get("config")
    data = stored.get("data")
    if not isinstance(values, dict) or not isinstance(data, dict):
        raise CheckpointError(f"{path}: 'config' and 'data' must be JSON objects; the file is damaged")
    return StoredRun(config=_config_from_dict(values, path), data=data)


def _config_from_dict(values: dict[str, Any], path: Path) -> TrainConfig:
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CheckpointError(
            f"{path}: unknown settings {', '.join(unknown)}; resume the run with the fmnist release that started it"
        )
    settings = dict(values)
    for name in ("data_dir", "output_dir"):
        if settings.get(name) is not None:
            settings[name] = Path(settings[name])
    if "betas" in settings:
        settings["betas"] = tuple(settings["betas"])
    try:
        return TrainConfig(**settings)
    except TypeError as error:
        raise CheckpointError(f"{path}: settings cannot be read ({error}); the file is damaged") from None


def resume_config(stored: TrainConfig, given_settings: dict[str, Any], run_dir: Path) -> TrainConfig:
    """Return the configuration of a resumed run: ``stored``, with the overrides that ``given_settings`` may change.

    ``given_settings`` contains the settings given explicitly on the command line, by TrainConfig
    field name. A setting that changes what is trained must be absent or equal to the
    stored value, else ConfigError lists every difference.
    """
    config = dataclasses.replace(stored, output_dir=Path(run_dir))
    differences = []
    for name, value in given_settings.items():
        if name in RESUME_OVERRIDES:
            setattr(config, name, value)
        elif name == "output_dir":
            if Path(value).resolve() != Path(run_dir).resolve():
                differences.append(f"--output-dir {value} (the run directory is {run_dir})")
        elif _normalised(value) != _normalised(getattr(stored, name)):
            option = "--" + name.replace("_", "-")
            differences.append(f"{option} {_shown(value)} (the run has {_shown(getattr(stored, name))})")
    if differences:
        raise ConfigError(
            f"--resume {run_dir}: options differ from the configuration in {Path(run_dir) / CONFIG_FILE}: "
            f"{', '.join(differences)}; leave them out to continue the run, or start a new run with --output-dir"
        )
    return config


def _normalised(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


def check_same_data(stored: dict[str, Any], found: dict[str, Any], run_dir: Path, data_dir: Path) -> None:
    """Raise unless the data found now is the data that the run in ``run_dir`` started with.

    Different file digests are the user's choice of data (ConfigError). Equal digests
    with another split or normalisation mean that this fmnist release splits
    differently (CheckpointError). Either way the run cannot continue identically.
    """
    config_path = Path(run_dir) / CONFIG_FILE
    stored_files = stored.get("files")
    if not isinstance(stored_files, list) or len(stored_files) != len(found["files"]):
        raise CheckpointError(f"{config_path}: the list of data files is missing or incomplete; the file is damaged")
    # Both lists follow the order of the dataset's files, whichever of gzip or raw IDX was read.
    for expected, entry in zip(stored_files, found["files"]):
        expected_md5 = expected.get("md5") if isinstance(expected, dict) else None
        if expected_md5 != entry["md5"]:
            raise ConfigError(
                f"{Path(data_dir) / entry['name']}: MD5 {entry['md5']} differs from {expected_md5}, the MD5 that "
                f"{config_path} records; pass --data-dir with the data that the run started with"
            )
    for key in ("split_sizes", "val_indices_sha256", "normalisation"):
        if stored.get(key) != found[key]:
            raise CheckpointError(
                f"{config_path}: {key} is {found[key]} for the same data files, but the run started with "
                f"{stored.get(key)}; resume the run with the fmnist release that started it"
            )
