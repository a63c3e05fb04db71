"""Optional TensorBoard logging (``fmnist train --tensorboard``): scalars per epoch in RUN_DIR/tensorboard.

``torch.utils.tensorboard`` writes the event files and needs the ``tensorboard``
package, which the ``fmnist[tensorboard]`` extra installs. The x-axis of every
scalar is the epoch (from 1), as in ``history.json``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fmnist.errors import ConfigError

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
INSTALL_COMMAND = "pip install 'fmnist[tensorboard]'"

# The scalar tag of each history field. Both losses share the "loss/" section, so
# TensorBoard shows them next to each other.
SCALAR_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_accuracy": "val/accuracy",
    "val_macro_f1": "val/macro_f1",
    "lr": "lr",
}


def tensorboard_installed() -> bool:
    """Return whether the tensorboard package that torch.utils.tensorboard needs can be imported."""
    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard() -> None:
    """Raise ConfigError, before any work starts, when the tensorboard package is missing."""
    if not tensorboard_installed():
        raise ConfigError(
            f"--tensorboard needs the tensorboard package, which is not installed; run {INSTALL_COMMAND} "
            f"or leave out --tensorboard"
        )


class EpochScalars:
    """An ``on_epoch_end`` callback of Trainer that writes the scalars of the epoch that just ended.

    The event file is flushed after every epoch, so a killed run keeps the epochs it
    finished, and closed after the last epoch.
    """

    def __init__(self, log_dir: Path, then: Callable[[Any], None] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.then = then
        logger.info("Writing TensorBoard scalars to %s; view them with: tensorboard --logdir %s", self.log_dir, self.log_dir)

    def __call__(self, trainer: Any) -> None:
        record = trainer.history[-1]
        for field, tag in SCALAR_TAGS.items():
            self.writer.add_scalar(tag, getattr(record, field), global_step=record.epoch)
        self.writer.flush()
        if trainer.stop_reason is not None:
            self.writer.close()
        if self.then is not None:
            self.then(trainer)


def epoch_callback(run_dir: Path, then: Callable[[Any], None] | None = None) -> EpochScalars:
    """Return the callback that writes scalars into ``run_dir/tensorboard``, then calls ``then``."""
    return EpochScalars(Path(run_dir) / TENSORBOARD_DIR, then)
