"""The training history: one record per epoch, written as JSON and CSV."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from fmnist.artifacts import atomic_write_json, atomic_write_text

HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"


@dataclass
class EpochRecord:
    """The measurements of one epoch. ``step`` is the count of optimizer updates at the end of the epoch."""

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    lr: float
    seconds: float


FIELDS = [name for name in EpochRecord.__dataclass_fields__]


def _json_value(value: float | int) -> float | int | None:
    # JSON has no NaN or infinity; a diverged epoch is recorded as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_history(run_dir: Path, history: list[EpochRecord]) -> None:
    """Write ``history.json`` and ``history.csv`` into ``run_dir``."""
    records = [{key: _json_value(value) for key, value in asdict(record).items()} for record in history]
    atomic_write_json(Path(run_dir) / HISTORY_JSON, records)

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in history:
        writer.writerow(asdict(record))
    atomic_write_text(Path(run_dir) / HISTORY_CSV, buffer.getvalue())


def read_history(run_dir: Path) -> list[EpochRecord]:
    """Read ``history.json`` from ``run_dir``; a null value reads back as NaN."""
    from fmnist.artifacts import read_json

    records = read_json(Path(run_dir) / HISTORY_JSON, "training history")
    return [
        EpochRecord(**{key: (math.nan if value is None else value) for key, value in record.items()})
        for record in records
    ]
