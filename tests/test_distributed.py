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


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_torchrun_two_cpu_processes(tmp_path):
    """Two gloo processes on 127.0.0.1 train through the entry point users call."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from fmnist import model_io
    from synthetic import make_dataset

    data_dir = make_dataset(tmp_path / "data", train_count=400, test_count=100)
    run_dir = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH")])),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "GLOO_SOCKET_IFNAME": "lo",
    }
    completed = subprocess.run(
        [*launcher, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         "-m", "fmnist", "train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
         "--epochs", "2", "--batch-size", "32", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    # Only rank 0 logs progress and writes the run directory.
    assert completed.stderr.count("Run directory ") == 1
    assert (run_dir / "model.safetensors").exists()
    assert (run_dir / "report.html").exists()
    metadata = json.loads((run_dir / "model.json").read_text())
    assert metadata["distributed"] == {
        "world_size": 2,
        "backend": "gloo",
        "shard_sizes": [180, 180],
        "samples_covered": 360,
        "repeated": 0,
    }
    history = json.loads((run_dir / "history.json").read_text())
    assert [record["step"] for record in history] == [12, 24]  # 180 samples per process, 16 per step

    model, _ = model_io.load_model(run_dir)
    assert not any(key.startswith("module.") for key in model.state_dict())


def test_sharded_batches_cover_the_shard():
    import numpy as np

    from fmnist.loading import FashionMNISTDataset
    from fmnist.train import ShardedBatches

    labels = np.resize(np.arange(10, dtype=np.uint8), 50)
    images = np.arange(50 * 784, dtype=np.int64).reshape(50, 28, 28).astype(np.uint8)
    dataset = FashionMNISTDataset(images, labels, mean=0.0, std=1.0)
    group = distributed.ProcessGroup(rank=1, world_size=2)
    batches = ShardedBatches(dataset, batch_size=8, seed=0, group=group, device=torch.device("cpu"))
    batches.set_epoch(3)
    seen = torch.cat([batch_labels for _, batch_labels in batches])
    expected = distributed.shard_indices(50, seed=0, epoch=3, rank=1, world_size=2)
    assert len(batches) == 4
    assert torch.equal(seen, torch.from_numpy(labels.astype(np.int64))[expected])


def test_bf16_precision_trains_on_cpu():
    from fmnist.config import TrainConfig
    from fmnist.model import build_model
    from fmnist.train import Trainer
    from test_train import datasets

    train, val = datasets()
    config = TrainConfig(epochs=2, batch_size=32, precision="bf16")
    result = Trainer(build_model(), config, train, val).fit()
    assert all(record.val_accuracy > 0.5 for record in result.history[1:])
    assert result.model[1].weight.dtype == torch.float32


@pytest.mark.gpu
def test_gpu_run_keeps_data_on_device_and_loads_on_cpu(tmp_path, data_dir, capsys):
    import json

    from fmnist import model_io
    from fmnist.cli import main
    from fmnist.loading import FashionMNISTDataset
    from fmnist.train import ShardedBatches

    images = torch.zeros(10, 28, 28, dtype=torch.uint8).numpy()
    batches = ShardedBatches(
        FashionMNISTDataset(images, torch.arange(10).numpy(), mean=0.0, std=1.0),
        batch_size=5, seed=0, group=distributed.ProcessGroup(), device=torch.device("cuda"),
    )
    assert batches.on_device
    assert batches.images.device.type == "cuda"

    run_dir = tmp_path / "run"
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
                 "--epochs", "2", "--batch-size", "32", "--device", "cuda", "--precision", "bf16", "--json", "--quiet"])
    assert code == 0
    assert json.loads((run_dir / "model.json").read_text())["device"].startswith("cuda")
    model, _ = model_io.load_model(run_dir)
    assert next(model.parameters()).device.type == "cpu"
    assert main(["evaluate", str(run_dir), "--data-dir", str(data_dir), "--offline", "--json", "--quiet"]) == 0
