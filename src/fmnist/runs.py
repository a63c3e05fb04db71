"""Read run directories, summarise each as one row, and list them (``fmnist runs``).

The reader checks the structure of ``model.json``, ``metrics.json`` and
``history.json`` before anything uses them, so a damaged file raises
CheckpointError with its name instead of a KeyError deep inside a report.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist import artifacts
from fmnist.errors import CheckpointError, ConfigError
from fmnist.history import FIELDS, HISTORY_JSON, EpochRecord

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
# A directory that contains one of these files was made by 'fmnist train', even if
# the run has not finished (checkpoint.pt, train.log) or ended before saving a model.
RUN_MARKERS = (artifacts.METADATA_FILE, HISTORY_JSON, METRICS_FILE, "config.json", "checkpoint.pt", "train.log")


@dataclass
class RunFiles:
    """The checked contents of one run directory; a file that is absent is None."""

    path: Path
    metadata: dict[str, Any] | None
    metrics: dict[str, Any] | None
    history: list[EpochRecord] | None
    # The configuration from config.json, for a run that has not written model.json yet.
    stored_config: dict[str, Any] | None = None


def is_run_dir(path: Path) -> bool:
    """Return whether ``path`` is a directory that contains a file that 'fmnist train' writes."""
    return path.is_dir() and any((path / name).exists() for name in RUN_MARKERS)


def read_run(run_dir: Path) -> RunFiles:
    """Read and check the JSON files and the weights of ``run_dir``, raising CheckpointError if one is damaged."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory; pass a directory written by 'fmnist train'")

    metadata_path = run_dir / artifacts.METADATA_FILE
    metrics_path = run_dir / METRICS_FILE
    history_path = run_dir / HISTORY_JSON
    metadata = artifacts.read_metadata(metadata_path) if metadata_path.exists() else None
    metrics = read_metrics(metrics_path) if metrics_path.exists() else None
    history = read_history(history_path) if history_path.exists() else None
    if metadata is None and history is None and (run_dir / "config.json").exists():
        # An interrupted run: config.json is written before the first epoch, history.json at the end.
        from fmnist import checkpoint

        stored = checkpoint.read_run_config(run_dir)
        return RunFiles(run_dir, None, metrics, None, stored_config=stored.config.to_dict())
    if metadata is None and history is None:
        raise CheckpointError(
            f"{run_dir}: neither {artifacts.METADATA_FILE} nor {HISTORY_JSON} found; "
            f"pass a run directory written by 'fmnist train'"
        )
    if metadata is not None:
        # A finished run is usable only with its weights: load them as predict does, which
        # checks their names, shapes, dtypes and values without importing torch.
        from fmnist.predict import load_classifier

        load_classifier(run_dir)
    return RunFiles(run_dir, metadata, metrics, history)


def _damaged(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}; the file is damaged, train again or restore it from a backup")


def is_number(value: Any) -> bool:
    """Return whether ``value`` is a JSON number: an int or float, but not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_history(path: Path) -> list[EpochRecord]:
    """Read ``history.json``, checking that every record has the numeric fields of an epoch."""
    records = artifacts.read_json(path, "training history")
    if not isinstance(records, list):
        raise _damaged(path, f"training history is a JSON {type(records).__name__}, expected a list of epoch records")
    history = []
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise _damaged(path, f"epoch record {position} is not a JSON object")
        missing = [name for name in FIELDS if name not in record]
        if missing:
            raise _damaged(path, f"epoch record {position} has no {', '.join(missing)}")
        for name in FIELDS:
            value = record[name]
            if value is not None and not is_number(value):
                raise _damaged(path, f"epoch record {position} has {name} {value!r}, expected a number")
        # JSON has no NaN, so history.write_history stores a non-finite loss as null.
        history.append(EpochRecord(**{name: math.nan if record[name] is None else record[name] for name in FIELDS}))
    return history


def read_metrics(path: Path) -> dict[str, Any]:
    """Read ``metrics.json``, checking accuracy, macro-F1, per-class scores and the confusion matrix."""
    metrics = artifacts.read_json(path, "test metrics")
    if not isinstance(metrics, dict):
        raise _damaged(path, "test metrics are not a JSON object")
    for name in ("accuracy", "macro_f1"):
        if not is_number(metrics.get(name)):
            raise _damaged(path, f"{name} is {metrics.get(name)!r}, expected a number")

    per_class = metrics.get("per_class")
    if not isinstance(per_class, list) or not per_class:
        raise _damaged(path, "per_class is missing or empty, expected one entry per class")
    for position, row in enumerate(per_class):
        if not isinstance(row, dict) or not isinstance(row.get("class_name"), str):
            raise _damaged(path, f"per_class entry {position} has no class_name")
        for name in ("precision", "recall", "f1", "support"):
            if not is_number(row.get(name)):
                raise _damaged(path, f"per_class entry {position} has {name} {row.get(name)!r}, expected a number")

    matrix = metrics.get("confusion_matrix")
    size = len(per_class)
    if not (
        isinstance(matrix, list)
        and len(matrix) == size
        and all(isinstance(row, list) and len(row) == size and all(is_number(count) for count in row) for row in matrix)
    ):
        raise _damaged(path, f"confusion_matrix is not a {size}x{size} table of counts")
    return metrics


def _created(run: RunFiles) -> dt.datetime:
    # model.json records when the model was saved; a run without one falls back to
    # the modification time of its directory.
    created = run.metadata.get("created") if run.metadata else None
    if isinstance(created, str):
        try:
            return dt.datetime.fromisoformat(created)
        except ValueError:
            logger.debug("%s: created %r is not an ISO date; using the directory's modification time", run.path, created)
    return dt.datetime.fromtimestamp(run.path.stat().st_mtime, dt.timezone.utc)


def summarize_run(run: RunFiles) -> dict[str, Any]:
    """Return one row of the runs table: date, configuration, epochs and metrics of ``run``."""
    metadata = run.metadata or {}
    config = metadata.get("config") if isinstance(metadata.get("config"), dict) else (run.stored_config or {})
    config = _without_non_finite(config)
    scores = metadata.get("metrics") if isinstance(metadata.get("metrics"), dict) else {}
    history = run.history or []

    def number(value: Any) -> float | None:
        # NaN and infinity would print as "nan" and make --json output invalid JSON.
        if not is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
            return None
        return value

    test_accuracy = number(run.metrics["accuracy"]) if run.metrics else number(scores.get("test_accuracy"))
    test_macro_f1 = number(run.metrics["macro_f1"]) if run.metrics else number(scores.get("test_macro_f1"))
    status, problem = "ok", None
    if run.metadata is None:
        status = "incomplete"
        problem = f"no {artifacts.METADATA_FILE}: training has not finished, or it stopped before saving a model"
    return {
        "run_dir": str(run.path),
        "name": run.path.name,
        "status": status,
        "problem": problem,
        "created": _created(run).isoformat(timespec="seconds"),
        "config": config,
        "epochs_run": number(metadata.get("epochs_run")) if run.metadata else len(history),
        "best_epoch": number(metadata.get("best_epoch")),
        "stop_reason": metadata.get("stop_reason") if isinstance(metadata.get("stop_reason"), str) else None,
        "best_val_loss": number(scores.get("best_val_loss")),
        "test_accuracy": test_accuracy,
        "test_macro_f1": test_macro_f1,
        "seconds": number(metadata.get("seconds")),
    }


def _without_non_finite(value: Any) -> Any:
    """Return ``value`` with every NaN or infinite float, at any depth, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _without_non_finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_non_finite(item) for item in value]
    return value


def damaged_row(run_dir: Path, error: Exception) -> dict[str, Any]:
    """Return the row of a run directory that cannot be read, with the reason in ``problem``."""
    row = {key: None for key in ("created", "epochs_run", "best_epoch", "stop_reason", "best_val_loss",
                                 "test_accuracy", "test_macro_f1", "seconds")}
    return {"run_dir": str(run_dir), "name": run_dir.name, "status": "damaged", "problem": str(error), "config": {}, **row}


def find_runs(root: Path) -> list[Path]:
    """Return the run directories directly under ``root``, or ``root`` itself if it is one."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such directory; pass the directory that contains the run directories (default: runs)")
    if is_run_dir(root):
        return [root]
    found = []
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        if is_run_dir(path):
            found.append(path)
        else:
            logger.debug("Skipping %s: it contains none of %s", path, ", ".join(RUN_MARKERS))
    return found


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Return one row per run directory under ``root``, oldest first; an unreadable run gets a damaged row."""
    rows = []
    for run_dir in find_runs(root):
        try:
            rows.append(summarize_run(read_run(run_dir)))
        except (CheckpointError, OSError) as error:
            logger.debug("Cannot read %s: %s", run_dir, error)
            rows.append(damaged_row(run_dir, error))
    # Damaged runs have no date and go last.
    return sorted(rows, key=lambda row: (row["created"] is None, row["created"] or "", row["name"]))


def format_seconds(seconds: float | None) -> str:
    """Return a duration as ``12.3s``, ``4m 05s`` or ``2h 03m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_date(created: str | None) -> str:
    """Return an ISO timestamp as local ``YYYY-MM-DD HH:MM``; ``-`` when unknown."""
    if not created:
        return "-"
    return dt.datetime.fromisoformat(created).astimezone().strftime("%Y-%m-%d %H:%M")


def _cell(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if spec and not is_number(value):
        # A damaged configuration can contain any JSON value where a number belongs.
        return str(value)
    return format(value, spec)


# Column title, how to get the cell text from a row, and whether it is right-aligned.
COLUMNS = (
    ("run", lambda row: row["name"], False),
    ("date", lambda row: format_date(row["created"]), False),
    ("batch", lambda row: _cell(row["config"].get("batch_size")), True),
    ("lr", lambda row: _cell(row["config"].get("lr"), "g"), True),
    ("dropout", lambda row: _cell(row["config"].get("dropout"), "g"), True),
    ("wd", lambda row: _cell(row["config"].get("weight_decay"), "g"), True),
    ("seed", lambda row: _cell(row["config"].get("seed")), True),
    ("epochs", lambda row: f"{_cell(row['epochs_run'])}/{_cell(row['config'].get('epochs'))}", True),
    ("best", lambda row: _cell(row["best_epoch"]), True),
    ("val loss", lambda row: _cell(row["best_val_loss"], ".4f"), True),
    ("test acc", lambda row: _cell(row["test_accuracy"], ".4f"), True),
    ("macro-F1", lambda row: _cell(row["test_macro_f1"], ".4f"), True),
    ("time", lambda row: format_seconds(row["seconds"]), True),
)


def format_runs_table(rows: list[dict[str, Any]]) -> str:
    """Render rows of :func:`list_runs` as a text table, then one line per run that is not ``ok``."""
    cells = [[title for title, _, _ in COLUMNS]]
    cells += [[render(row) for _, render, _ in COLUMNS] for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(COLUMNS))]
    lines = []
    for line in cells:
        padded = [
            text.rjust(width) if right else text.ljust(width)
            for text, width, (_, _, right) in zip(line, widths, COLUMNS)
        ]
        lines.append("  ".join(padded).rstrip())
    notes = [f"{row['name']}: {row['status']}: {row['problem']}" for row in rows if row["status"] != "ok"]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
