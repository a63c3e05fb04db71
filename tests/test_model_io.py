import json
import pickle
import shutil

import pytest
import torch

from fmnist import artifacts, model_io
from fmnist.errors import CheckpointError
from fmnist.model import build_model


def metadata(**changes):
    value = {
        "format_version": 1,
        "architecture": {"name": "mlp-784-300-200-10", "dropout": 0.2},
        "normalisation": {"mean": 0.28, "std": 0.35},
        "class_names": [str(index) for index in range(10)],
    }
    value.update(changes)
    return value


def make_overflowing(state):
    """Change ``state`` so that every weight is a finite float32 but the second layer's sums overflow to NaN."""
    state["1.bias"] = torch.full((300,), 3e38)
    state["4.weight"] = torch.full((200, 300), 3e38)
    return state


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    model = build_model().eval()
    directory = tmp_path / "run"
    directory.mkdir()
    model_io.save_model(directory, model, metadata())
    return directory


def test_round_trip_predicts_the_same(run_dir):
    torch.manual_seed(0)
    original = build_model().eval()
    loaded, loaded_metadata = model_io.load_model(run_dir)
    images = torch.randn(16, 784)
    assert torch.equal(original(images), loaded(images))
    assert loaded_metadata["normalisation"] == {"mean": 0.28, "std": 0.35}
    assert not loaded.training


def test_no_temporary_files_left(run_dir):
    assert sorted(path.name for path in run_dir.iterdir()) == ["model.json", "model.safetensors"]


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped(tmp_path, prefix):
    state = {prefix + key: value for key, value in build_model().state_dict().items()}
    path = tmp_path / "wrapped.pt"
    torch.save(state, path)
    loaded = model_io.read_state_dict(path)
    assert sorted(loaded) == sorted(build_model().state_dict())


def test_training_checkpoint_yields_model_state(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": build_model().state_dict(), "epoch": 3}, path)
    assert sorted(model_io.read_state_dict(path)) == sorted(build_model().state_dict())


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as file:
        pickle.dump({"1.weight": RunsCode()}, file)
    with pytest.raises(CheckpointError) as raised:
        model_io.read_state_dict(path)
    assert str(raised.value).startswith(f"{path}: refused to load, the file holds objects other than tensors (")
    assert not (tmp_path / "PWNED").exists()


def test_truncated_safetensors(run_dir):
    weights = run_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(run_dir)
    assert str(raised.value).startswith(f"{weights}: model file is truncated or corrupt (")
    assert str(raised.value).endswith("); train again or restore it from a backup")


def test_empty_weights_file(run_dir):
    (run_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="model file is empty; train again or restore it from a backup"):
        model_io.load_model(run_dir)


def test_truncated_torch_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(build_model().state_dict(), path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="model file is truncated or corrupt"):
        model_io.read_state_dict(path)


def test_other_architecture(run_dir):
    model = torch.nn.Sequential(torch.nn.Linear(784, 10))
    model_io.save_model(run_dir, model, metadata())
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(run_dir)
    assert str(raised.value) == (
        f"{run_dir / 'model.safetensors'}: weights belong to another architecture (unexpected keys 0.bias, 0.weight; "
        f"missing 1.bias, 1.weight, 4.bias, 4.weight); expected mlp-784-300-200-10"
    )


def test_wrong_tensor_shape(tmp_path):
    state = build_model().state_dict()
    state["4.weight"] = torch.zeros(200, 301)
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as raised:
        model_io.check_state_dict(model_io.read_state_dict(path), path)
    assert str(raised.value) == f"{path}: tensor 4.weight has shape (200, 301), expected (200, 300) for mlp-784-300-200-10"


def test_missing_keys(tmp_path):
    state = build_model().state_dict()
    del state["7.bias"]
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as raised:
        model_io.check_state_dict(model_io.read_state_dict(path), path)
    assert str(raised.value) == f"{path}: weights are missing keys 7.bias; the file is incomplete"


def test_missing_metadata(run_dir):
    (run_dir / "model.json").unlink()
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(run_dir)
    assert str(raised.value) == (
        f"{run_dir / 'model.json'}: model metadata not found; is this a run directory written by 'fmnist train'?"
    )


def test_unsupported_format_version(run_dir):
    (run_dir / "model.json").write_text(json.dumps(metadata(format_version=99)))
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(run_dir)
    assert str(raised.value) == (
        f"{run_dir / 'model.json'}: format version 99 is not supported, expected 1; use the fmnist release that wrote it"
    )


def test_missing_run_directory(tmp_path):
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(tmp_path / "nowhere")
    assert str(raised.value) == (
        f"{tmp_path / 'nowhere'}: no such run directory or model file; pass the directory that 'fmnist train' wrote"
    )


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "value.json"
    artifacts.atomic_write_json(path, {"old": 1})

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.os, "replace", broken_replace)
    with pytest.raises(OSError):
        artifacts.atomic_write_json(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["value.json"]


def save_as_if_on_gpu(value, path, monkeypatch) -> None:
    """Save ``value`` with every storage tagged "cuda:0", as torch.save does for tensors on the first GPU."""
    import zipfile

    import torch.serialization

    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(value, path)
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))
    assert b"cuda:0" in pickled


@pytest.mark.parametrize("prefix", ["", "module."])
def test_state_dict_saved_on_gpu_loads_on_cpu(tmp_path, monkeypatch, prefix):
    state = {prefix + key: value for key, value in build_model().state_dict().items()}
    path = tmp_path / "model.pt"
    save_as_if_on_gpu(state, path, monkeypatch)
    if not torch.cuda.is_available():
        # Without map_location the storages would be restored on the GPU.
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)

    loaded = model_io.read_state_dict(path)
    assert sorted(loaded) == sorted(key.removeprefix(prefix) for key in state)
    for key, tensor in state.items():
        assert loaded[key.removeprefix(prefix)].device.type == "cpu"
        assert torch.equal(loaded[key.removeprefix(prefix)], tensor)


def test_safetensors_records_no_device(run_dir):
    # safetensors stores dtype, shape and byte offsets only, so a file written from GPU
    # tensors reads back on the CPU like any other.
    weights = (run_dir / "model.safetensors").read_bytes()
    header_size = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8 : 8 + header_size])
    for key, entry in header.items():
        if key != "__metadata__":
            assert set(entry) == {"dtype", "shape", "data_offsets"}, key
    model, _ = model_io.load_model(run_dir)
    assert {parameter.device.type for parameter in model.parameters()} == {"cpu"}


def test_non_finite_weights_rejected(tmp_path):
    model = build_model().eval()
    with torch.no_grad():
        model[4].weight[3, 7] = float("nan")
    directory = tmp_path / "run"
    directory.mkdir()
    model_io.save_model(directory, model, metadata())
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(directory)
    assert str(raised.value) == (
        f"{directory / 'model.safetensors'}: tensor 4.weight contains NaN or infinite values; "
        f"train again or restore the file from a backup"
    )


@pytest.mark.parametrize(
    ("normalisation", "message"),
    [
        ({"mean": float("inf"), "std": 0.35}, "normalisation mean is inf, expected a number between 0 and 1"),
        ({"mean": 1e300, "std": 0.35}, "normalisation mean is 1e+300, expected a number between 0 and 1"),
        ({"mean": 10**400, "std": 0.35},
         f"normalisation mean is {str(10**400)[:37]}..., expected a number between 0 and 1"),
        ({"mean": 0.28, "std": float("nan")}, "normalisation std is nan, expected a number between 1e-07 and 1"),
        ({"mean": 0.28, "std": 0}, "normalisation std is 0, expected a number between 1e-07 and 1"),
        ({"mean": 0.28, "std": 1e-300}, "normalisation std is 1e-300, expected a number between 1e-07 and 1"),
        ({"mean": True, "std": 0.35}, "normalisation mean is True, expected a number"),
        ({"mean": 0.28, "std": "0.35"}, "normalisation std is '0.35', expected a number"),
    ],
)
def test_non_finite_normalisation_rejected(run_dir, normalisation, message):
    (run_dir / "model.json").write_text(json.dumps(metadata(normalisation=normalisation)))
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(run_dir)
    assert str(raised.value) == f"{run_dir / 'model.json'}: {message}; the file is damaged"


def test_deeply_nested_metadata(run_dir):
    (run_dir / "model.json").write_text("[" * 100_000)
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(run_dir)
    assert str(raised.value) == (
        f"{run_dir / 'model.json'}: model metadata cannot be read (nested too deeply); the file is damaged"
    )


@pytest.mark.parametrize("dropout", [2.0, "x", True, float("nan")])
def test_invalid_dropout_in_metadata(run_dir, dropout):
    (run_dir / "model.json").write_text(json.dumps(metadata(architecture={"name": "mlp-784-300-200-10", "dropout": dropout})))
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(run_dir)
    assert str(raised.value) == (
        f"{run_dir / 'model.json'}: architecture dropout is {dropout!r}, expected a number in [0, 1); the file is damaged"
    )


def test_float8_weights_rejected(run_dir):
    from safetensors.torch import save_file

    state = build_model().state_dict()
    state["1.weight"] = state["1.weight"].to(torch.float8_e4m3fn)
    save_file(state, run_dir / "model.safetensors")
    with pytest.raises(CheckpointError) as raised:
        model_io.load_model(run_dir)
    assert str(raised.value) == (
        f"{run_dir / 'model.safetensors'}: tensor 1.weight has dtype float8_e4m3fn, expected floating-point weights; "
        f"train again or restore the file from a backup"
    )
