"""Devices and multi-process training with ``torch.distributed``.

A process started by ``torchrun`` gets the environment variables ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Each process then
trains a ``DistributedDataParallel`` replica on its own shard of the data. The
batch size and learning rate are global: with N processes each one steps over
``batch_size / N`` images, and DDP averages the gradients, so one optimizer step
sees the same number of images as a single-process run with the same options.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fmnist.errors import ConfigError

logger = logging.getLogger(__name__)

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``--device``: auto picks CUDA, then MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device; use {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} requested but CUDA is not available; use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name} requested but only {count} CUDA device(s) exist (cuda:0 to cuda:{count - 1})")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ConfigError(f"--device {name} requested but MPS is not available; use --device cpu or auto")
        return device
    raise ConfigError(f"--device {name!r} is not supported; use {DEVICE_CHOICES}")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a distributed run: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory, logs and plots (rank 0)."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Return whether ``torchrun`` started this process with more than one process in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process_group(device: torch.device) -> ProcessGroup:
    """Join the process group that torchrun set up; a plain run returns a group of one.

    The backend is NCCL for CUDA devices and gloo otherwise. With CUDA, each process
    uses the GPU of its local rank.
    """
    if not launched_by_torchrun():
        return ProcessGroup()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    group = ProcessGroup(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=backend,
    )
    logger.debug("Joined process group: rank %d of %d, backend %s", group.rank, group.world_size, backend)
    return group


def device_for(group: ProcessGroup, device: torch.device) -> torch.device:
    """Return the device of this process: its local GPU in a multi-GPU run, else ``device``."""
    if group.is_distributed and device.type == "cuda":
        return torch.device("cuda", group.local_rank)
    return device


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def per_process_batch_size(batch_size: int, world_size: int) -> int:
    """Split the global batch size over the processes; it must divide evenly."""
    if batch_size % world_size:
        raise ConfigError(
            f"--batch-size {batch_size} is the global batch and must be divisible by the {world_size} processes; "
            f"use {batch_size - batch_size % world_size or world_size}"
        )
    return batch_size // world_size


def epoch_permutation(count: int, seed: int, epoch: int) -> torch.Tensor:
    """Return the shuffled sample order of ``epoch``, identical in every process."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator)


def shard_indices(count: int, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """Return the positions that process ``rank`` trains on in ``epoch``.

    Every process takes every ``world_size``-th element of the same permutation,
    starting at its rank, so the shards are disjoint. When ``count`` is not a
    multiple of ``world_size``, the last shards repeat the first elements of the
    permutation, so that every process runs the same number of steps; DDP needs that.
    """
    order = epoch_permutation(count, seed, epoch)
    remainder = count % world_size
    if remainder:
        order = torch.cat([order, order[: world_size - remainder]])
    return order[rank::world_size]


def all_reduce_sum(tensor: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Sum ``tensor`` over every process in place (a no-op in a single-process run)."""
    if group.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(values: list[float], group: ProcessGroup, device: torch.device) -> list[float]:
    """Return rank 0's ``values`` in every process."""
    if not group.is_distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def all_succeeded(succeeded: bool, group: ProcessGroup, device: torch.device) -> bool:
    """Return whether every process succeeded, so that no process waits for one that has failed."""
    if not group.is_distributed:
        return succeeded
    failures = torch.tensor([0.0 if succeeded else 1.0], device=device)
    dist.all_reduce(failures, op=dist.ReduceOp.SUM)
    return failures.item() == 0


def describe_shards(shard: torch.Tensor, group: ProcessGroup, device: torch.device) -> dict:
    """Gather the shard that each process trains on and return the facts rank 0 records.

    ``repeated`` counts the positions that appear in more than one shard: the padding
    that evens out the shards when the train split does not divide by the processes.
    """
    local = shard.to(device)
    parts = [torch.empty_like(local) for _ in range(group.world_size)]
    dist.all_gather(parts, local)
    seen = torch.cat(parts).cpu()
    covered = len(torch.unique(seen))
    return {
        "world_size": group.world_size,
        "backend": group.backend,
        "shard_sizes": [len(part) for part in parts],
        "samples_covered": covered,
        "repeated": len(seen) - covered,
    }
