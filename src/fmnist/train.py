"""The training loop: Adam, a per-step LinearLR schedule, cross-entropy and early stopping."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmnist import augment, metrics
from fmnist.config import TrainConfig
from fmnist.errors import ConfigError, TrainingError
from fmnist.history import EpochRecord
from fmnist.loading import FashionMNISTDataset, make_loader

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopDecision:
    """The outcome of one early-stopping update, with the numbers behind it."""

    improved: bool
    stop: bool
    reason: str


@dataclass
class EarlyStopping:
    """Stop when val loss has not improved by more than ``min_delta`` for ``patience`` epochs."""

    patience: int
    min_delta: float = 0.0
    best_loss: float = math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0

    def update(self, epoch: int, val_loss: float) -> StopDecision:
        """Record the val loss of ``epoch`` and decide whether training should stop."""
        if val_loss < self.best_loss - self.min_delta:
            previous = self.best_loss
            self.best_loss = val_loss
            self.best_epoch = epoch
            self.epochs_without_improvement = 0
            return StopDecision(True, False, f"val_loss improved from {previous:.4f} to {val_loss:.4f}")

        self.epochs_without_improvement += 1
        if self.epochs_without_improvement >= self.patience:
            return StopDecision(
                False,
                True,
                f"val_loss {val_loss:.4f} has not improved on {self.best_loss:.4f} (epoch {self.best_epoch}) "
                f"by more than {self.min_delta} for {self.patience} epochs",
            )
        return StopDecision(False, False, f"no improvement for {self.epochs_without_improvement} epochs")

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = float(state["best_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])


@dataclass
class Evaluation:
    """Loss, labels and predictions of a model over one dataset."""

    loss: float
    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None = None


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: FashionMNISTDataset,
    batch_size: int = 4096,
    keep_probabilities: bool = False,
) -> Evaluation:
    """Return the mean cross-entropy loss and the predictions of ``model`` on ``dataset``."""
    model.eval()
    total_loss = 0.0
    labels_parts = []
    predictions_parts = []
    probability_parts = []
    for start in range(0, len(dataset), batch_size):
        images, labels = dataset.__getitems__(range(start, min(start + batch_size, len(dataset))))
        logits = model(images)
        total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        labels_parts.append(labels.numpy())
        predictions_parts.append(logits.argmax(dim=1).numpy())
        if keep_probabilities:
            probability_parts.append(torch.softmax(logits, dim=1).numpy())
    return Evaluation(
        loss=total_loss / max(len(dataset), 1),
        labels=np.concatenate(labels_parts),
        predictions=np.concatenate(predictions_parts),
        probabilities=np.concatenate(probability_parts) if keep_probabilities else None,
    )


@dataclass
class TrainResult:
    """What :func:`fit` returns: the best model, its history and how training ended."""

    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    best_val_loss: float
    stop_reason: str
    error: TrainingError | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_batch_size(batch_size: int, train_size: int) -> None:
    """Raise ConfigError when ``batch_size`` is larger than the train split, because no batch could be full."""
    if batch_size > train_size:
        raise ConfigError(
            f"--batch-size {batch_size} is larger than the train split ({train_size} samples); "
            f"use a batch size of at most {train_size}"
        )


class Trainer:
    """Train the model on a train dataset with early stopping on a val dataset."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_set: FashionMNISTDataset,
        val_set: FashionMNISTDataset,
        *,
        progress: bool = False,
        on_epoch_end=None,
    ) -> None:
        check_batch_size(config.batch_size, len(train_set))
        self.model = model
        self.config = config
        self.train_set = train_set
        self.val_set = val_set
        self.progress = progress
        self.on_epoch_end = on_epoch_end

        self.generator = torch.Generator().manual_seed(config.seed)
        self.loader = make_loader(train_set, config.batch_size, shuffle=True, generator=self.generator)
        self.steps_per_epoch = len(self.loader)
        # Pixels that augmentation moves into the image are black, in normalised units.
        self.augment_fill = -train_set.mean / train_set.std
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LinearLR(
            self.optimizer,
            start_factor=config.lr_start_factor,
            end_factor=config.lr_end_factor,
            total_iters=config.epochs * self.steps_per_epoch,
        )
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.stopping = EarlyStopping(config.patience, config.min_delta)
        self.history: list[EpochRecord] = []
        self.best_state = copy.deepcopy(model.state_dict())
        self.step = 0
        self.epoch = 0
        # Set at the end of the last epoch, so that a checkpoint records that training stopped.
        self.stop_reason: str | None = None
        self.error_message: str | None = None

    def train_epoch(self) -> float:
        """Run one epoch of optimizer steps and return the mean train loss."""
        self.model.train()
        total_loss = torch.zeros((), dtype=torch.float64)
        samples = 0
        batches = self.loader
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"epoch {self.epoch}", unit="batch", leave=False)
        for images, labels in batches:
            if self.config.augment_shift:
                # The loader's generator draws the shifts too, so a checkpoint's loader_rng covers them.
                images = augment.random_shift(images, self.config.augment_shift, self.augment_fill, self.generator)
            logits = self.model(images)
            loss = self.loss_fn(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            total_loss += loss.detach() * len(labels)
            samples += len(labels)
        return float(total_loss) / samples

    def fit(self) -> TrainResult:
        """Train until patience runs out or the epochs end, then restore the best weights.

        A trainer restored with :meth:`load_state_dict` continues after its last completed
        epoch. When the restored state records that training had stopped, no epoch runs.
        """
        while self.stop_reason is None:
            self.epoch += 1
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss = self.train_epoch()
            evaluation = evaluate_model(self.model, self.val_set)
            summary = metrics.summarize(evaluation.labels, evaluation.predictions, [str(i) for i in range(10)])
            record = EpochRecord(
                epoch=self.epoch,
                step=self.step,
                train_loss=train_loss,
                val_loss=evaluation.loss,
                val_accuracy=summary["accuracy"],
                val_macro_f1=summary["macro_f1"],
                lr=lr,
                seconds=time.perf_counter() - started,
            )
            self.history.append(record)

            improved = False
            if not (math.isfinite(train_loss) and math.isfinite(evaluation.loss)):
                self.stop_reason = "loss is not finite"
                self.error_message = self._non_finite_message(train_loss, evaluation.loss)
            else:
                decision = self.stopping.update(self.epoch, evaluation.loss)
                improved = decision.improved
                if decision.improved:
                    self.best_state = copy.deepcopy(self.model.state_dict())
                if decision.stop:
                    self.stop_reason = f"early stopping: {decision.reason}"
                elif self.epoch >= self.config.epochs:
                    self.stop_reason = f"reached the maximum of {self.config.epochs} epochs"

            self._log_epoch(record, improved)
            if self.on_epoch_end:
                self.on_epoch_end(self)

        self.model.load_state_dict(self.best_state)
        self.model.eval()
        if self.stopping.best_epoch:
            restored = f"Restored the weights of epoch {self.stopping.best_epoch}."
        else:
            restored = "No epoch had a finite loss, so there are no weights to restore."
        logger.info("Stopped after epoch %d: %s. %s", self.epoch, self.stop_reason, restored)
        return TrainResult(
            model=self.model,
            history=self.history,
            best_epoch=self.stopping.best_epoch,
            best_val_loss=self.stopping.best_loss,
            stop_reason=self.stop_reason,
            error=TrainingError(self.error_message) if self.error_message else None,
        )

    def _non_finite_message(self, train_loss: float, val_loss: float) -> str:
        if self.stopping.best_epoch:
            kept = f"kept the weights of epoch {self.stopping.best_epoch}"
        else:
            kept = "no epoch had a finite loss, so no weights were kept"
        return (
            f"loss is not finite in epoch {self.epoch} (train_loss {train_loss}, val_loss {val_loss}); "
            f"{kept}; lower --lr and train again"
        )

    def _log_epoch(self, record: EpochRecord, improved: bool) -> None:
        logger.info(
            "epoch %d/%d step %d train_loss %.4f val_loss %.4f val_accuracy %.4f val_macro_f1 %.4f lr %.2e %.1fs%s",
            record.epoch,
            self.config.epochs,
            record.step,
            record.train_loss,
            record.val_loss,
            record.val_accuracy,
            record.val_macro_f1,
            record.lr,
            record.seconds,
            " *" if improved else "",
        )

    # Resumable state: everything needed to continue after the last completed epoch.
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "best_state": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "early_stopping": self.stopping.state_dict(),
            "history": [record.__dict__.copy() for record in self.history],
            "torch_rng": torch.get_rng_state(),
            "loader_rng": self.generator.get_state(),
            "stop_reason": self.stop_reason,
            "error_message": self.error_message,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.best_state = state["best_state"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopping.load_state_dict(state["early_stopping"])
        self.history = [EpochRecord(**record) for record in state["history"]]
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["loader_rng"])
        self.stop_reason = state["stop_reason"]
        self.error_message = state["error_message"]
