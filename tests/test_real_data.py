"""A short run of the main job on the real Fashion-MNIST files, skipped when they are absent."""

import json

import numpy as np
import pytest
from PIL import Image

from fmnist import data
from fmnist.cli import main

pytestmark = pytest.mark.real_data


def test_short_run_train_evaluate_predict(real_data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "--data-dir", str(real_data_dir), "--offline", "--output-dir", str(run_dir),
                 "--epochs", "2", "--batch-size", "256", "--quiet", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["test_accuracy"] > 0.84
    metadata = json.loads((run_dir / "model.json").read_text())
    assert metadata["split_sizes"] == {"train": 54000, "val": 6000, "test": 10000}
    official = {entry["name"]: entry["official"] for entry in metadata["data_files"]}
    assert official == {
        "train-images-idx3-ubyte.gz": False,
        "train-labels-idx1-ubyte.gz": True,
        "t10k-images-idx3-ubyte.gz": False,
        "t10k-labels-idx1-ubyte.gz": True,
    }

    assert main(["evaluate", str(run_dir), "--data-dir", str(real_data_dir), "--offline", "--json", "--quiet"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["accuracy"] == pytest.approx(summary["test_accuracy"])

    test_split = data.load_split(real_data_dir, "test")
    paths = []
    for index in range(20):
        path = tmp_path / f"test{index}.png"
        Image.fromarray(np.asarray(test_split.images[index])).save(path)
        paths.append(str(path))
    assert main(["predict", str(run_dir), *paths, "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    correct = sum(entry["label"] == int(test_split.labels[i]) for i, entry in enumerate(predictions))
    assert correct >= 15
