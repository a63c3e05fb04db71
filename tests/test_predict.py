import numpy as np
import pytest
import torch
from PIL import Image

from fmnist import model_io
from fmnist.errors import CheckpointError, ConfigError
from fmnist.model import build_model
from fmnist.predict import load_classifier, predict_files
from test_model_io import make_overflowing, metadata


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(3)
    directory = tmp_path / "run"
    directory.mkdir()
    model_io.save_model(directory, build_model().eval(), metadata())
    return directory


def test_numpy_forward_matches_torch(run_dir):
    model, meta = model_io.load_model(run_dir)
    classifier = load_classifier(run_dir)
    images = np.random.default_rng(0).integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
    pixels = torch.from_numpy(images.reshape(64, -1)).float() / 255.0
    normalised = (pixels - meta["normalisation"]["mean"]) / meta["normalisation"]["std"]
    with torch.no_grad():
        expected = torch.softmax(model(normalised), dim=1).numpy()
    actual = classifier.probabilities(images)
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert (actual.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_unreadable_file_gets_its_own_entry(run_dir, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    results = predict_files(run_dir, [bad, good], top_k=2)
    assert results[0]["file"] == str(bad)
    assert set(results[0]) == {"file", "error"}
    assert results[0]["error"].startswith(f"cannot read image {bad}:")
    assert set(results[1]) == {"file", "label", "class_name", "probability", "top_k"}
    assert len(results[1]["top_k"]) == 2
    assert results[1]["top_k"][0]["label"] == results[1]["label"]
    assert results[1]["top_k"][0]["probability"] >= results[1]["top_k"][1]["probability"]


def test_top_k_out_of_range(run_dir, tmp_path):
    with pytest.raises(ConfigError) as raised:
        predict_files(run_dir, [tmp_path / "x.png"], top_k=11)
    assert str(raised.value) == "--top-k must be between 1 and 10, got 11"


def test_bfloat16_weights_rejected(run_dir):
    from safetensors.torch import save_file

    weights = run_dir / "model.safetensors"
    state = {key: value.to(torch.bfloat16) for key, value in build_model().state_dict().items()}
    save_file(state, weights)
    with pytest.raises(CheckpointError) as raised:
        load_classifier(run_dir)
    assert str(raised.value) == (
        f"{weights}: model file contains BF16 tensors, which predict cannot read; "
        f"save the weights as float32, as 'fmnist train' does"
    )


def test_infinite_weights_rejected_in_cli(run_dir, tmp_path, capsys):
    from fmnist.cli import main

    model = build_model().eval()
    with torch.no_grad():
        model[7].bias[0] = float("inf")
    model_io.save_model(run_dir, model, metadata())
    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    code = main(["predict", str(run_dir), str(image), "--quiet"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir / 'model.safetensors'}: tensor 7.bias contains NaN or infinite values; "
        f"train again or restore the file from a backup\n"
    )


def save_weights(run_dir, state):
    from safetensors.torch import save_file

    save_file({key: value.contiguous() for key, value in state.items()}, run_dir / "model.safetensors")


def test_empty_weights_message_matches_evaluate(run_dir):
    (run_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError) as raised:
        load_classifier(run_dir)
    assert str(raised.value) == f"{run_dir / 'model.safetensors'}: model file is empty; train again or restore it from a backup"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.to(torch.int32), "tensor 1.weight has dtype int32, expected floating-point weights"),
        (lambda t: t.double() * 1e300, "tensor 1.weight has values beyond the float32 range"),
    ],
)
def test_unusable_weight_types_rejected(run_dir, change, message):
    state = build_model().state_dict()
    state["1.weight"] = change(state["1.weight"])
    save_weights(run_dir, state)
    for load in (load_classifier, model_io.load_model):
        with pytest.raises(CheckpointError) as raised:
            load(run_dir)
        assert str(raised.value) == f"{run_dir / 'model.safetensors'}: {message}; train again or restore the file from a backup"


def test_overflowing_outputs_give_error_not_nan(run_dir, tmp_path, capsys):
    from fmnist.cli import main

    state = make_overflowing(build_model().state_dict())
    save_weights(run_dir, state)
    image = tmp_path / "one.png"
    Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(image)
    code = main(["predict", str(run_dir), str(image), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err == (
        f"error: {run_dir}: the model gives NaN or infinite outputs, so its weights or normalisation are damaged; "
        f"train again or restore the run from a backup\n"
    )
