"""The training configuration: one validated object, printed at start and stored with the run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmnist.errors import ConfigError


@dataclass
class TrainConfig:
    """Every setting of one training run. Units are given where a value has one."""

    data_dir: Path | None = None
    output_dir: Path | None = None
    offline: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    dropout: float = 0.2
    # LinearLR multiplies the learning rate by a factor that moves linearly from
    # lr_start_factor to lr_end_factor over all steps of `epochs` epochs.
    lr_start_factor: float = 1.0
    lr_end_factor: float = 0.1
    patience: int = 5
    min_delta: float = 0.0
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError listing every invalid setting, before any work starts."""
        problems = list(self._problems())
        if problems:
            raise ConfigError("invalid options: " + "; ".join(problems))

    def _problems(self):
        if not (_finite(self.lr) and self.lr > 0):
            yield f"--lr must be a positive number, got {self.lr}"
        for name in ("lr_start_factor", "lr_end_factor"):
            value = getattr(self, name)
            if not (_finite(value) and 0 < value <= 1):
                yield f"--{name.replace('_', '-')} must be in (0, 1], got {value}"
        if not (_finite(self.val_fraction) and 0 < self.val_fraction < 1):
            yield f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}"
        if self.epochs < 1:
            yield f"--epochs must be at least 1, got {self.epochs}"
        if self.batch_size < 1:
            yield f"--batch-size must be at least 1, got {self.batch_size}"
        if self.patience < 1:
            yield f"--patience must be at least 1, got {self.patience}"
        if not (_finite(self.min_delta) and self.min_delta >= 0):
            yield f"--min-delta must be a number >= 0, got {self.min_delta}"
        if not (_finite(self.dropout) and 0 <= self.dropout < 1):
            yield f"--dropout must be in [0, 1), got {self.dropout}"
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            yield f"--weight-decay must be a number >= 0, got {self.weight_decay}"
        for beta in self.betas:
            if not (_finite(beta) and 0 <= beta < 1):
                yield f"--betas must each be in [0, 1), got {beta}"
        if self.threads is not None and self.threads < 1:
            yield f"--threads must be at least 1, got {self.threads}"

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready values (paths as strings)."""
        values = dataclasses.asdict(self)
        for key, value in values.items():
            if isinstance(value, Path):
                values[key] = str(value)
            elif isinstance(value, tuple):
                values[key] = list(value)
        return values


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
