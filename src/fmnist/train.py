"""The training loop: Adam, a per-step LinearLR schedule, cross-entropy and early stopping."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fmnist import augment, distributed, metrics
from fmnist.config import TrainConfig
from fmnist.errors import ConfigError, TrainingError
from fmnist.history import EpochRecord
from fmnist.loading import FashionMNISTDataset, make_loader

logger = logging.getLogger(__name__)


def plural(count: int, noun: str) -> str:
    """Return ``count`` with ``noun``, adding "s" unless the count is 1: "1 epoch", "2 epochs"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


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
                f"by more than {self.min_delta} for {plural(self.patience, 'epoch')}",
            )
        return StopDecision(False, False, f"no improvement for {plural(self.epochs_without_improvement, 'epoch')}")

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


def autocast(device: torch.device, precision: str):
    """Return the autocast context for ``precision``: bfloat16 for "bf16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: FashionMNISTDataset,
    batch_size: int = 4096,
    keep_probabilities: bool = False,
    *,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> Evaluation:
    """Return the mean cross-entropy loss and the predictions of ``model`` on ``dataset``.

    Batches move to ``device`` (default: the CPU); the results come back as numpy arrays.
    """
    device = device or torch.device("cpu")
    model.eval()
    total_loss = 0.0
    labels_parts = []
    predictions_parts = []
    probability_parts = []
    for start in range(0, len(dataset), batch_size):
        images, labels = dataset.__getitems__(range(start, min(start + batch_size, len(dataset))))
        with autocast(device, precision):
            logits = model(images.to(device)).float()
        logits = logits.cpu()
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


@torch.no_grad()
def evaluate_shard(
    model: nn.Module,
    dataset: FashionMNISTDataset,
    group: distributed.ProcessGroup,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[float, np.ndarray]:
    """Return the mean loss and the confusion matrix of ``dataset``, summed over every process.

    Each process evaluates every ``world_size``-th sample, starting at its rank. The sums
    of the loss, the sample count and the confusion matrix are then reduced over all
    processes, so every process returns the metrics of the whole dataset.
    """
    model.eval()
    positions = range(group.rank, len(dataset), group.world_size)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, sample count
    matrix = torch.zeros(10 * 10, dtype=torch.int64, device=device)
    for start in range(0, len(positions), 4096):
        images, labels = dataset.__getitems__(positions[start : start + 4096])
        images, labels = images.to(device), labels.to(device)
        with autocast(device, precision):
            logits = model(images).float()
        totals[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
        totals[1] += len(labels)
        matrix += torch.bincount(labels * 10 + logits.argmax(dim=1), minlength=100)
    distributed.all_reduce_sum(totals, group)
    distributed.all_reduce_sum(matrix, group)
    loss = float(totals[0] / totals[1]) if totals[1] else math.nan
    return loss, matrix.reshape(10, 10).cpu().numpy()


class ShardedBatches:
    """The batches of this process's shard of each epoch's permutation, cut from tensors on the device.

    Every process draws the same permutation of the train split for an epoch (a pure
    function of the seed and the epoch) and trains on its own disjoint part of it (see
    :func:`fmnist.distributed.shard_indices`). The normalised split is copied to the
    device once when it fits there, so a batch is one indexing call with no copy from
    the host. Otherwise each batch is copied to the device.
    """

    def __init__(
        self,
        dataset: FashionMNISTDataset,
        batch_size: int,
        seed: int,
        group: distributed.ProcessGroup,
        device: torch.device,
    ) -> None:
        images, labels = dataset.tensors()
        self.count = len(labels)
        self.on_device = device.type == "cpu" or _fits_on(device, images.nbytes + labels.nbytes)
        storage = device if self.on_device else torch.device("cpu")
        self.images = images.to(storage)
        self.labels = labels.to(storage)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group
        self.device = device
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self) -> torch.Tensor:
        """Return the positions in the train split that this process trains on in this epoch."""
        return distributed.shard_indices(self.count, self.seed, self.epoch, self.group.rank, self.group.world_size)

    def __len__(self) -> int:
        shard_size = -(-self.count // self.group.world_size)
        return -(-shard_size // self.batch_size)

    def __iter__(self):
        indices = self.shard().to(self.images.device)
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start : start + self.batch_size]
            images, labels = self.images[batch], self.labels[batch]
            if not self.on_device:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
            yield images, labels


def _fits_on(device: torch.device, size: int) -> bool:
    # Keep at least half of the free memory for the model, activations and optimizer.
    # NOTE: the CUDA paths here and in DDP with NCCL have run only in CPU tests. The
    # tests marked gpu check them on a machine with a GPU.
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return size < free // 2


@dataclass
class TrainResult:
    """The result of :meth:`Trainer.fit`: the best model, its history and how training ended."""

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
        device: torch.device | None = None,
        group: distributed.ProcessGroup | None = None,
    ) -> None:
        check_batch_size(config.batch_size, len(train_set))
        self.device = device or torch.device("cpu")
        self.group = group or distributed.ProcessGroup()
        self.model = model.to(self.device)
        self.config = config
        self.train_set = train_set
        self.val_set = val_set
        self.progress = progress
        self.on_epoch_end = on_epoch_end

        self.generator = torch.Generator().manual_seed(config.seed)
        if self.group.is_distributed or self.device.type != "cpu":
            batch_size = distributed.per_process_batch_size(config.batch_size, self.group.world_size)
            self.loader = ShardedBatches(train_set, batch_size, config.seed, self.group, self.device)
        else:
            # One CPU process keeps the DataLoader over the memory map: its order is the
            # one that resumed runs reproduce bit for bit.
            self.loader = make_loader(train_set, config.batch_size, shuffle=True, generator=self.generator)
        self.train_model = model
        if self.group.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(model, device_ids=device_ids)
            # Every process starts from the same weights (DDP broadcasts rank 0's), but
            # each needs its own dropout masks.
            torch.manual_seed(config.seed * 1_000_003 + self.group.rank)
            self.shards = distributed.describe_shards(self.loader.shard(), self.group, self.device)
        else:
            self.shards = None
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
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        samples = 0
        if isinstance(self.loader, ShardedBatches):
            self.loader.set_epoch(self.epoch)
        batches = self.loader
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"epoch {self.epoch}", unit="batch", leave=False)
        for images, labels in batches:
            if self.config.augment_shift:
                # The loader's generator draws the shifts too, so a checkpoint's loader_rng covers them.
                images = augment.random_shift(images, self.config.augment_shift, self.augment_fill, self.generator)
            with autocast(self.device, self.config.precision):
                logits = self.train_model(images)
                loss = self.loss_fn(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            total_loss += loss.detach() * len(labels)
            samples += len(labels)
        totals = torch.stack([total_loss, torch.tensor(float(samples), dtype=torch.float64, device=self.device)])
        distributed.all_reduce_sum(totals, self.group)
        return float(totals[0] / totals[1])

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
            val_loss, val_matrix = self._evaluate_val()
            scores = metrics.per_class_scores(val_matrix)
            record = EpochRecord(
                epoch=self.epoch,
                step=self.step,
                train_loss=train_loss,
                val_loss=val_loss,
                val_accuracy=float(np.trace(val_matrix) / max(val_matrix.sum(), 1)),
                val_macro_f1=float(scores["f1"].mean()),
                lr=lr,
                seconds=time.perf_counter() - started,
            )
            self.history.append(record)

            improved = False
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                self.stop_reason = "loss is not finite"
                self.error_message = self._non_finite_message(train_loss, val_loss)
            else:
                decision = self._decide(val_loss)
                improved = decision.improved
                if decision.improved:
                    self.best_state = copy.deepcopy(self.model.state_dict())
                if decision.stop:
                    self.stop_reason = f"early stopping: {decision.reason}"
                elif self.epoch >= self.config.epochs:
                    self.stop_reason = f"reached the maximum of {plural(self.config.epochs, 'epoch')}"

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

    def _evaluate_val(self) -> tuple[float, np.ndarray]:
        if self.group.is_distributed:
            return evaluate_shard(self.model, self.val_set, self.group, self.device, self.config.precision)
        evaluation = evaluate_model(self.model, self.val_set, device=self.device, precision=self.config.precision)
        return evaluation.loss, metrics.confusion_matrix(evaluation.labels, evaluation.predictions)

    def _decide(self, val_loss: float) -> StopDecision:
        """Update early stopping; with several processes, rank 0's decision is broadcast to all."""
        decision = self.stopping.update(self.epoch, val_loss)
        if not self.group.is_distributed:
            return decision
        improved, stop = distributed.broadcast_from_main(
            [float(decision.improved), float(decision.stop)], self.group, self.device
        )
        return StopDecision(bool(improved), bool(stop), decision.reason)

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
