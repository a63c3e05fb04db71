import pytest
import torch

from fmnist import distributed
from fmnist.errors import ConfigError


def test_shards_disjoint_and_cover_everything():
    shards = [distributed.shard_indices(10, seed=3, epoch=1, rank=rank, world_size=2) for rank in range(2)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(shards[0].tolist() + shards[1].tolist()) == list(range(10))


def test_uneven_shards_padded_to_equal_length():
    shards = [distributed.shard_indices(10, seed=0, epoch=1, rank=rank, world_size=3) for rank in range(3)]
    assert [len(shard) for shard in shards] == [4, 4, 4]
    assert set().union(*(shard.tolist() for shard in shards)) == set(range(10))


def test_permutation_depends_on_seed_and_epoch():
    first = distributed.epoch_permutation(100, seed=0, epoch=1)
    assert torch.equal(first, distributed.epoch_permutation(100, seed=0, epoch=1))
    assert not torch.equal(first, distributed.epoch_permutation(100, seed=0, epoch=2))
    assert not torch.equal(first, distributed.epoch_permutation(100, seed=1, epoch=1))


def test_global_batch_split_over_processes():
    assert distributed.per_process_batch_size(256, 2) == 128
    with pytest.raises(ConfigError) as raised:
        distributed.per_process_batch_size(255, 2)
    assert str(raised.value) == (
        "--batch-size 255 is the global batch and must be divisible by the 2 processes; use 254"
    )


def test_resolve_device_cpu_and_auto_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(distributed, "_mps_available", lambda: False)
    assert distributed.resolve_device("auto") == torch.device("cpu")
    assert distributed.resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_cuda_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as raised:
        distributed.resolve_device("cuda:1")
    assert str(raised.value) == "--device cuda:1 requested but CUDA is not available; use --device cpu or auto"


def test_resolve_device_unknown_name():
    with pytest.raises(ConfigError) as raised:
        distributed.resolve_device("tpu")
    assert str(raised.value) == "--device 'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps"


def test_single_process_group_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group = distributed.init_process_group(torch.device("cpu"))
    assert group == distributed.ProcessGroup()
    assert group.is_main
    assert not group.is_distributed
