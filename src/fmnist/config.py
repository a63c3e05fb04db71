"""The training configuration: one validated object, printed at start and stored with the run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmnist.errors import ConfigError

MAX_AUGMENT_SHIFT = 8
PRECISIONS = ("fp32", "bf16")
# torch crashes (segmentation fault) when asked for tens of thousands of threads.
MAX_THREADS = 512
# The largest finite float32. Adam's step size is passed to float32 tensors as a float32.
FLOAT32_MAX = 3.4028234663852886e38

# The TrainConfig fields that a preset may set: the recipe, but not the data, the seed or the paths.
PRESET_FIELDS = (
    "epochs",
    "batch_size",
    "lr",
    "betas",
    "weight_decay",
    "dropout",
    "lr_start_factor",
    "lr_end_factor",
    "patience",
    "min_delta",
    "label_smoothing",
    "augment_shift",
)

# Named recipes: each maps TrainConfig field names to the values it changes. Explicit
# settings override a preset's values; docs/benchmarks.md records how each was measured.
PRESETS: dict[str, dict[str, Any]] = {
    # The most accurate recipe found: random shifts of up to 1 pixel, which only pay off over
    # many epochs and with little dropout. On the real data, about 92% test accuracy in 200
    # epochs, which took about 3 minutes on 2 CPU cores (docs/benchmarks.md).
    "best": {
        "epochs": 200,
        "batch_size": 256,
        "lr": 2e-3,
        "lr_end_factor": 0.01,
        "dropout": 0.1,
        "weight_decay": 5e-5,
        "label_smoothing": 0.1,
        "augment_shift": 1,
        "patience": 50,
    },
}


@dataclass
class TrainConfig:
    """Every setting of one training run. Units are given where a value has one."""

    data_dir: Path | None = None
    output_dir: Path | None = None
    offline: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    # The defaults are the recipe with the best accuracy per second among those that
    # docs/benchmarks.md records: on the real data, about 90.5% test accuracy in 15 epochs.
    epochs: int = 15
    batch_size: int = 256
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    dropout: float = 0.2
    # LinearLR multiplies the learning rate by a factor that moves linearly from
    # lr_start_factor to lr_end_factor over all steps of `epochs` epochs.
    lr_start_factor: float = 1.0
    lr_end_factor: float = 0.05
    patience: int = 5
    min_delta: float = 0.0
    # Cross-entropy target smoothing: each label keeps 1 - label_smoothing and every class
    # gets label_smoothing / 10. Val and test losses are always plain cross-entropy.
    label_smoothing: float = 0.0
    # Random shift of each training image by up to this many pixels per axis (0: off).
    augment_shift: int = 0
    threads: int | None = None
    # Where training runs: auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps.
    device: str = "auto"
    # fp32, or bf16 for torch.autocast with bfloat16 in the forward pass and the loss.
    precision: str = "fp32"
    # The name of the preset in PRESETS whose values this configuration started from.
    preset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_preset(cls, preset: str | None = None, **settings: Any) -> TrainConfig:
        """Build a configuration from the defaults, then the values of ``preset``, then ``settings``.

        A setting given as None keeps the preset's value or the default, so that command-line
        options the user did not give can be passed through as they are. An unknown preset
        is reported by :meth:`validate`.
        """
        values = dict(PRESETS.get(preset, {}))
        values.update({name: value for name, value in settings.items() if value is not None})
        return cls(preset=preset, **values)

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
        yield from self._step_size_problems()
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            yield f"--threads must be between 1 and {MAX_THREADS}, got {self.threads}"
        if not 0 <= self.seed < 2**32:
            yield f"--seed must be between 0 and {2**32 - 1}, got {self.seed}"
        if not (_finite(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            yield f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"
        if not 0 <= self.augment_shift <= MAX_AUGMENT_SHIFT:
            yield f"--augment-shift must be between 0 and {MAX_AUGMENT_SHIFT} pixels, got {self.augment_shift}"
        if self.precision not in PRECISIONS:
            yield f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        if self.preset is not None and self.preset not in PRESETS:
            yield f"--preset must be one of {', '.join(sorted(PRESETS))}, got {self.preset!r}"

    def _step_size_problems(self):
        # Adam's first step size is lr / (1 - beta1), the largest of the run because the
        # bias correction grows towards 1. torch raises a RuntimeError in the first
        # optimizer step when it does not fit in a float32.
        beta1 = self.betas[0] if self.betas else 0.0
        if not (_finite(self.lr) and self.lr > 0 and _finite(beta1) and 0 <= beta1 < 1):
            return
        step_size = self.lr / (1 - beta1)
        if step_size >= FLOAT32_MAX:
            yield (
                f"--lr {self.lr} is too large: Adam's first step size lr / (1 - beta1) = {step_size:.3g} "
                f"does not fit in a float32; use a learning rate below {FLOAT32_MAX * (1 - beta1):.3g}"
            )

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
