import numpy as np
import pytest
import torch
from PIL import Image

from fmnist import model_io
from fmnist.errors import ConfigError
from fmnist.model import build_model
from fmnist.predict import load_classifier, predict_files
from test_model_io import metadata


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
