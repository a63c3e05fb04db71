"""Tests of fmnist.export and fmnist.deployable: the exported model gives the same probabilities through its runtime."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist import artifacts, deployable, export
from fmnist.architecture import ARCHITECTURE
from fmnist.cli import main
from fmnist.datasets import FASHION_MNIST
from fmnist.errors import ConfigError
from fmnist.loading import FashionMNISTDataset
from fmnist.model import build_model
from fmnist.model_io import load_model, save_model
from synthetic import make_images

MEAN = 0.2860
STD = 0.3530


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with a randomly initialised model and the metadata that loading needs."""
    directory = tmp_path_factory.mktemp("export") / "run"
    directory.mkdir()
    torch.manual_seed(3)
    metadata = {
        "format_version": artifacts.FORMAT_VERSION,
        "architecture": {"name": ARCHITECTURE, "dropout": 0.2},
        "normalisation": {"mean": MEAN, "std": STD, "pixel_scale": 255.0},
        "class_names": list(FASHION_MNIST.class_names),
    }
    save_model(directory, build_model(0.2), metadata)
    return directory


def sample_images(count: int, seed: int = 0) -> np.ndarray:
    """Return uint8 images (count, 28, 28): half noise over the full range, half the synthetic classes."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(count - count // 2, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count // 2).astype(np.uint8)
    return np.concatenate([noise, make_images(labels, seed=seed)])


def reference_probabilities(run_dir: Path, images: np.ndarray) -> np.ndarray:
    """Return the probabilities that training and evaluation compute: dataset normalisation, model, softmax."""
    model, metadata = load_model(run_dir)
    normalisation = metadata["normalisation"]
    dataset = FashionMNISTDataset(images, np.zeros(len(images), dtype=np.uint8), mean=normalisation["mean"], std=normalisation["std"])
    with torch.no_grad():
        return torch.softmax(model(dataset.tensors()[0]), dim=1).numpy()


# TorchScript.


@pytest.fixture(scope="module")
def torchscript_file(run_dir: Path) -> Path:
    return export.export_model(run_dir, "torchscript")


def load_torchscript(path: Path, extra_files: dict | None = None):
    with deployable._quiet_exporters():
        return torch.jit.load(str(path), _extra_files=extra_files or {})


@pytest.mark.parametrize("count", [1, 9])
def test_torchscript_uint8_probabilities(run_dir: Path, torchscript_file: Path, count: int) -> None:
    images = sample_images(count, seed=count)
    model = load_torchscript(torchscript_file)

    with torch.no_grad():
        probabilities = model(torch.from_numpy(images)).numpy()

    assert probabilities.shape == (count, 10)
    np.testing.assert_allclose(probabilities, reference_probabilities(run_dir, images), rtol=0, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-5)


def test_torchscript_float_input(run_dir: Path, torchscript_file: Path) -> None:
    images = sample_images(6, seed=11)
    model = load_torchscript(torchscript_file)

    with torch.no_grad():
        probabilities = model(torch.from_numpy(images.astype(np.float32))).numpy()

    np.testing.assert_allclose(probabilities, reference_probabilities(run_dir, images), rtol=0, atol=1e-5)


def test_torchscript_carries_metadata(run_dir: Path, torchscript_file: Path) -> None:
    extra_files = {"model.json": ""}
    load_torchscript(torchscript_file, extra_files)

    assert torchscript_file == run_dir / "model.torchscript.pt"
    assert json.loads(extra_files["model.json"]) == json.loads((run_dir / "model.json").read_text())


def test_torchscript_differs_from_other_model(run_dir: Path, torchscript_file: Path, tmp_path: Path) -> None:
    # Guards the comparison above: another model's probabilities are far from this one's.
    torch.manual_seed(4)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    save_model(other_dir, build_model(0.2), json.loads((run_dir / "model.json").read_text()))
    images = sample_images(4)
    with torch.no_grad():
        probabilities = load_torchscript(torchscript_file)(torch.from_numpy(images)).numpy()

    assert np.abs(probabilities - reference_probabilities(other_dir, images)).max() > 1e-3


# ONNX, through ONNX Runtime.


@pytest.fixture(scope="module")
def onnx_session(run_dir: Path, tmp_path_factory):
    for package in ("onnxruntime", *export.ONNX_PACKAGES):
        pytest.importorskip(package)
    import onnxruntime

    path = export.export_model(run_dir, "onnx", tmp_path_factory.mktemp("onnx") / "fashion.onnx")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("count", [1, 2, 13])
def test_onnx_probabilities(run_dir: Path, onnx_session, count: int) -> None:
    images = sample_images(count, seed=20 + count)

    (probabilities,) = onnx_session.run(["probabilities"], {"images": images.astype(np.float32)})

    assert probabilities.shape == (count, 10)
    np.testing.assert_allclose(probabilities, reference_probabilities(run_dir, images), rtol=0, atol=1e-5)


def test_onnx_signature(onnx_session) -> None:
    (image_input,) = onnx_session.get_inputs()
    (output,) = onnx_session.get_outputs()

    assert (image_input.name, image_input.type) == ("images", "tensor(float)")
    assert image_input.shape[1:] == [28, 28]
    assert isinstance(image_input.shape[0], str)
    assert (output.name, output.shape[1]) == ("probabilities", 10)


def test_onnx_carries_metadata(run_dir: Path, onnx_session) -> None:
    stored = onnx_session.get_modelmeta().custom_metadata_map[export.METADATA_KEY]
    assert json.loads(stored) == json.loads((run_dir / "model.json").read_text())


def test_onnx_packages_missing(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "onnxscript" else find_spec(name, *args))

    with pytest.raises(ConfigError) as caught:
        export.export_model(run_dir, "onnx", run_dir / "never.onnx")

    assert str(caught.value) == (
        "--format onnx needs the packages onnxscript, which are not installed; "
        "run pip install 'fmnist[onnx]' or use --format torchscript"
    )
    assert not (run_dir / "never.onnx").exists()


# Files and the command line.


def test_unknown_format(run_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        export.export_model(run_dir, "tflite")
    assert str(caught.value) == "--format must be one of onnx, torchscript, got 'tflite'"


def test_failed_export_leaves_no_file(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(model, metadata, path):
        path.write_bytes(b"partial")
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(deployable, "save_torchscript", fail)

    with pytest.raises(RuntimeError):
        export.export_model(run_dir, "torchscript", tmp_path / "out" / "model.pt")

    assert list((tmp_path / "out").iterdir()) == []


def test_cli_export_prints_path(run_dir: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "deploy" / "nested" / "classifier.pt"

    code = main(["export", str(run_dir), "--format", "torchscript", "--output", str(output)])

    assert code == 0
    captured = capsys.readouterr()
    assert captured.out == f"{output}\n"
    assert captured.err == ""
    assert load_torchscript(output) is not None


def test_cli_export_missing_run(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope"), "--format", "torchscript"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nope'}: no such run directory or model file; pass the directory that 'fmnist train' wrote\n"
    )


def test_cli_export_needs_format(run_dir: Path, capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["export", str(run_dir)])
    assert raised.value.code == 2
    assert "the following arguments are required: --format" in capsys.readouterr().err


def test_cli_export_refuses_model_file(run_dir: Path, capsys) -> None:
    weights = run_dir / "model.safetensors"
    before = weights.read_bytes()

    code = main(["export", str(run_dir), "--format", "torchscript", "--output", str(weights)])

    assert code == 2
    assert capsys.readouterr().err == (
        f"error: --output {weights}: this is the model.safetensors of the run directory {run_dir}, and writing it "
        f"would replace the run's own file; choose another file name\n"
    )
    assert weights.read_bytes() == before


def test_export_overflowing_model_rejected(run_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil

    from safetensors.torch import load_file, save_file
    from test_model_io import make_overflowing

    run_dir = shutil.copytree(run_dir, tmp_path / "run")  # the fixture's run is shared by the module
    save_file(make_overflowing(load_file(run_dir / "model.safetensors")), run_dir / "model.safetensors")
    output = tmp_path / "model.pt"

    code = main(["export", str(run_dir), "--format", "torchscript", "--output", str(output)])

    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir}: the model gives NaN or infinite outputs, so its weights or normalisation are damaged; "
        f"train again or restore the run from a backup\n"
    )
    assert not output.exists()


def test_export_to_name_not_utf8(run_dir: Path, tmp_path: Path) -> None:
    import os

    output = tmp_path / os.fsdecode(b"model-\xff.pt")
    assert main(["export", str(run_dir), "--format", "torchscript", "--output", str(output), "--quiet"]) == 0
    with open(output, "rb") as file:  # torch.jit.load also rejects such path strings
        assert torch.jit.load(file) is not None
