"""Failures seen through the command line: each gives one clean error line and the right exit code.

Covered here: invalid training options (rejected before any work), a loss that becomes
non-finite, 'fmnist download --verify', and prediction inputs that are damaged or unusual.
"""

from __future__ import annotations

import csv
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fmnist import checkpoint, download, pipeline
from fmnist.cli import main
from fmnist.datasets import FASHION_MNIST
from fmnist.errors import DataFormatError
from fmnist.train import Trainer
from synthetic import make_dataset

# --- invalid training options --------------------------------------------------------


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if anything tries to download."""

    def refuse(*args, **kwargs):
        pytest.fail("a download was attempted")

    monkeypatch.setattr(download, "download_dataset", refuse)
    monkeypatch.setattr(download, "fetch_file", refuse)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--lr", "0"], "--lr must be a positive number, got 0.0"),
        (["--lr", "-0.001"], "--lr must be a positive number, got -0.001"),
        (["--lr-start-factor", "0"], "--lr-start-factor must be in (0, 1], got 0.0"),
        (["--lr-end-factor", "1.5"], "--lr-end-factor must be in (0, 1], got 1.5"),
        (["--val-fraction", "0"], "--val-fraction must be between 0 and 1 (exclusive), got 0.0"),
        (["--val-fraction", "1"], "--val-fraction must be between 0 and 1 (exclusive), got 1.0"),
        (["--patience", "0"], "--patience must be at least 1, got 0"),
    ],
)
def test_invalid_option_before_download(tmp_path, no_download, capsys, options, message):
    # No --offline and no data: the option must be rejected before a download would start.
    output_dir = tmp_path / "runs" / "run"
    code = main(["train", "--data-dir", str(tmp_path / "data"), "--output-dir", str(output_dir), *options])
    assert code == 2
    assert capsys.readouterr().err == f"error: invalid options: {message}\n"
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--val-fraction", "0.01"],
            "--val-fraction 0.01 gives class 0 (40 samples) 0 val samples; every class needs at least one sample "
            "in train and in val, so choose a fraction between 0.025 and 0.975 (the smallest class has 40 samples)",
        ),
        (
            ["--val-fraction", "0.99"],
            "--val-fraction 0.99 gives class 0 (40 samples) 40 val samples; every class needs at least one sample "
            "in train and in val, so choose a fraction between 0.025 and 0.975 (the smallest class has 40 samples)",
        ),
        (
            ["--batch-size", "361"],
            "--batch-size 361 is larger than the train split (360 samples); use a batch size of at most 360",
        ),
    ],
)
def test_option_that_needs_the_data_before_run_directory(tmp_path, data_dir, capsys, options, message):
    # 400 synthetic training images, 40 per class. Val takes 10%, so train contains 360.
    output_dir = tmp_path / "runs" / "run"
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(output_dir), "--quiet", *options])
    assert code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "runs").exists()


# --- non-finite loss -----------------------------------------------------------------


def read_history_csv(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 100
    assert height > 100


def test_loss_not_finite_in_epoch_1(tmp_path, data_dir, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
                 "--epochs", "4", "--batch-size", "32", "--lr", "1e30", "--quiet"])
    assert code == 1
    assert capsys.readouterr().err == (
        "error: loss is not finite in epoch 1 (train_loss nan, val_loss nan); no epoch had a finite loss, "
        "so no weights were kept; lower --lr and train again\n"
    )
    assert not (run_dir / "model.safetensors").exists()
    assert not (run_dir / "metrics.json").exists()
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 1
    assert history[0]["train_loss"] is None
    assert history[0]["val_loss"] is None
    assert read_history_csv(run_dir)[0]["train_loss"] == "nan"
    assert_png(run_dir / "history.png")


def test_loss_not_finite_in_epoch_3_keeps_best_weights(tmp_path, data_dir, monkeypatch, capsys):
    # Epoch 3 turns every weight into NaN, as a diverging optimizer would.
    original_epoch = Trainer.train_epoch

    def diverging_epoch(self):
        loss = original_epoch(self)
        if self.epoch < 3:
            return loss
        with torch.no_grad():
            for parameter in self.model.parameters():
                parameter.fill_(float("nan"))
        return float("nan")

    best_states = {}
    original_save = checkpoint.save_checkpoint

    def remember_best(path, trainer_state, *, complete=False):
        best_states[trainer_state["epoch"]] = {key: value.clone() for key, value in trainer_state["best_state"].items()}
        original_save(path, trainer_state, complete=complete)

    monkeypatch.setattr(Trainer, "train_epoch", diverging_epoch)
    monkeypatch.setattr(checkpoint, "save_checkpoint", remember_best)
    run_dir = tmp_path / "run"
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
                 "--epochs", "6", "--batch-size", "32", "--lr", "0.0003", "--quiet"])

    history = json.loads((run_dir / "history.json").read_text())
    best_epoch = min((1, 2), key=lambda epoch: history[epoch - 1]["val_loss"])
    assert code == 1
    assert capsys.readouterr().err == (
        f"error: loss is not finite in epoch 3 (train_loss nan, val_loss nan); kept the weights of epoch "
        f"{best_epoch}; lower --lr and train again\n"
    )

    weights = load_file(run_dir / "model.safetensors")
    for key, tensor in weights.items():
        assert torch.isfinite(tensor).all(), key
        assert torch.equal(tensor, best_states[2][key]), key
    assert json.loads((run_dir / "model.json").read_text())["best_epoch"] == best_epoch
    assert (run_dir / "metrics.json").exists()

    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert history[2]["train_loss"] is None
    assert history[2]["val_loss"] is None
    assert all(math.isfinite(history[index]["val_loss"]) for index in (0, 1))
    assert read_history_csv(run_dir)[2]["val_loss"] == "nan"
    assert_png(run_dir / "history.png")
    assert_png(run_dir / "confusion_matrix.png")


def test_resume_after_non_finite_loss_is_refused(tmp_path, data_dir, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
                 "--epochs", "4", "--batch-size", "32", "--lr", "1e30", "--quiet"]) == 1
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"error: --resume {run_dir}: the run is already complete (stopped after epoch 1: loss is not finite); "
        "to train further, start a new run with --output-dir\n"
    )


# --- download --verify ---------------------------------------------------------------


def verify_line(status: str, name: str, detail: str) -> str:
    return f"{status:17} {name}  {detail}"


def data_file_names(data_dir: Path) -> list[str]:
    """Return the names in ``data_dir`` except the decompressed cache, which validation builds."""
    return sorted(path.name for path in data_dir.iterdir() if path.name != ".fmnist-cache")


def test_verify_all_valid(data_dir, capsys):
    code = main(["download", "--verify", "--data-dir", str(data_dir)])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        verify_line("valid-unofficial", data_file.name, f"MD5 differs from the official {data_file.md5}, format is valid")
        for data_file in FASHION_MNIST.files
    ]


def test_verify_invalid_and_missing(data_dir, capsys):
    empty = data_dir / "train-labels-idx1-ubyte.gz"
    empty.write_bytes(b"")
    (data_dir / "t10k-images-idx3-ubyte.gz").unlink()
    names_before = data_file_names(data_dir)

    code = main(["download", "--verify", "--data-dir", str(data_dir)])
    assert code == 2
    files = {data_file.name: data_file for data_file in FASHION_MNIST.files}
    assert capsys.readouterr().out.splitlines() == [
        verify_line(
            "valid-unofficial", "train-images-idx3-ubyte.gz",
            f"MD5 differs from the official {files['train-images-idx3-ubyte.gz'].md5}, format is valid",
        ),
        verify_line("invalid", "train-labels-idx1-ubyte.gz",
                    f"{empty}: file is empty; delete it and run 'fmnist download' again"),
        verify_line("missing", "t10k-images-idx3-ubyte.gz",
                    f"not found: no t10k-images-idx3-ubyte.gz or t10k-images-idx3-ubyte in {data_dir}"),
        verify_line(
            "valid-unofficial", "t10k-labels-idx1-ubyte.gz",
            f"MD5 differs from the official {files['t10k-labels-idx1-ubyte.gz'].md5}, format is valid",
        ),
    ]
    # --verify only reports: the invalid file stays where it is, nothing is fetched.
    assert data_file_names(data_dir) == names_before
    assert empty.read_bytes() == b""


def test_verify_reports_the_format_error(data_dir, capsys):
    path = data_dir / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataFormatError) as raised:
        pipeline._validate_with_cache(path)

    assert main(["download", "--verify", "--data-dir", str(data_dir)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[3] == verify_line("invalid", "t10k-labels-idx1-ubyte.gz", str(raised.value))
    assert str(raised.value).startswith(f"{path}: ")


def test_verify_empty_directory(tmp_path, capsys):
    assert main(["download", "--verify", "--data-dir", str(tmp_path)]) == 2
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["missing"] * 4


# --- prediction inputs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run directory trained on synthetic data, in which each class is a light patch at its own place."""
    root = tmp_path_factory.mktemp("predict-inputs")
    data_dir = make_dataset(root / "data")
    run_dir = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
                     "--epochs", "6", "--batch-size", "32", "--quiet"])
    assert code == 0
    return run_dir


def clothing(label: int) -> np.ndarray:
    """Return a 28x28 image of ``label`` as the synthetic data draws it: a light patch on black."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    row = 2 + (label // 5) * 13
    column = 1 + (label % 5) * 5
    pixels[row : row + 11, column : column + 5] = 230
    return pixels


def write_png_header(path: Path, width: int, height: int) -> Path:
    """Write a PNG that declares a size but contains no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def stored_mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


def make_inputs(directory: Path) -> tuple[list[Path], dict[str, int | None], dict[str, str]]:
    """Write every kind of prediction input; return the paths, the expected labels and the expected errors.

    An expected label of None means any label: the image is valid but shows no clothing.
    """
    directory.mkdir()
    labels: dict[str, int | None] = {}
    errors: dict[str, str] = {}

    path = directory / "plain.png"
    Image.fromarray(clothing(5)).save(path)
    labels[path.name] = 5

    path = directory / "notes.png"
    path.write_text("this is not an image\n")
    errors[path.name] = (
        f"cannot read image {path}: the file is not an image in a format that Pillow recognizes, or it is "
        "damaged; pass a PNG, JPEG, BMP, GIF, TIFF or WebP file"
    )

    path = directory / "empty.jpg"
    path.write_bytes(b"")
    errors[path.name] = f"cannot read image {path}: the file is empty (0 bytes); pass an image file such as a PNG or JPEG"

    path = directory / "thin.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(1000, 1), dtype=np.uint8)).save(path)
    assert Image.open(path).size == (1, 1000)
    labels[path.name] = None

    path = write_png_header(directory / "bomb.png", 100_000, 100_000)
    errors[path.name] = (
        f"cannot read image {path}: Pillow rejected it as a possible decompression bomb because its header "
        f"declares more than {Image.MAX_IMAGE_PIXELS} pixels; downscale the image and try again"
    )

    path = directory / "cmyk.jpg"
    Image.fromarray(clothing(3)).convert("CMYK").save(path, quality=95)
    assert stored_mode(path) == "CMYK"
    labels[path.name] = 3

    # Palette index 0 is black and transparent; the patch is opaque.
    path = directory / "palette.png"
    palette_image = Image.fromarray(clothing(7)).convert("P")
    palette_image.save(path, transparency=int(palette_image.getpixel((0, 0))))
    with Image.open(path) as image:
        assert image.mode == "P"
        assert "transparency" in image.info
    labels[path.name] = 7

    path = directory / "sixteen_bit.png"
    Image.fromarray(clothing(1).astype(np.uint16) * 257).save(path)
    assert stored_mode(path) == "I;16"
    labels[path.name] = 1

    # Stored turned a quarter counter-clockwise. EXIF orientation 6 tells viewers to turn
    # it clockwise for display, which brings back the upright image.
    path = directory / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(clothing(8)))).save(path, exif=exif, quality=95)
    labels[path.name] = 8

    path = directory / "white.png"
    Image.new("L", (28, 28), 255).save(path)
    labels[path.name] = None

    path = directory / "black.png"
    Image.new("L", (28, 28), 0).save(path)
    labels[path.name] = None

    paths = sorted(directory.iterdir())
    return paths, labels, errors


def test_predict_every_kind_of_input_json(trained_run, tmp_path, capsys):
    paths, labels, errors = make_inputs(tmp_path / "images")
    code = main(["predict", str(trained_run), *map(str, paths), "--json", "--quiet"])
    captured = capsys.readouterr()

    assert code == 2
    assert captured.err == f"error: {len(errors)} of {len(paths)} images could not be classified\n"
    results = json.loads(captured.out)
    assert [entry["file"] for entry in results] == [str(path) for path in paths]
    for path, entry in zip(paths, results):
        if path.name in errors:
            assert entry == {"file": str(path), "error": errors[path.name]}
            continue
        assert "error" not in entry, path.name
        assert 0 <= entry["label"] <= 9
        assert entry["class_name"] == FASHION_MNIST.class_names[entry["label"]]
        assert len(entry["top_k"]) == 3
        if labels[path.name] is not None:
            assert entry["label"] == labels[path.name], path.name


def test_rotation_matters_for_the_rotated_input(trained_run, tmp_path, capsys):
    # Without its EXIF tag, the stored pixels of rotated.jpg show another class.
    path = tmp_path / "rotated-without-exif.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(clothing(8)))).save(path, quality=95)
    assert main(["predict", str(trained_run), str(path), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] != 8


def test_predict_every_kind_of_input_text(trained_run, tmp_path, capsys):
    paths, labels, errors = make_inputs(tmp_path / "images")
    assert main(["predict", str(trained_run), *map(str, paths), "--quiet"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(paths)
    for path, line in zip(paths, lines):
        if path.name in errors:
            assert line == f"{path}: error: {errors[path.name]}"
        else:
            assert line.startswith(f"{path}: ")
            assert "; top 3: " in line
        if labels.get(path.name) is not None:
            assert line.startswith(f"{path}: {FASHION_MNIST.class_names[labels[path.name]]} (")


def test_empty_path_option_rejected(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["train", "--data-dir", ""])
    assert raised.value.code == 2
    assert "--data-dir: an empty path is not allowed; give a file or directory" in capsys.readouterr().err


def test_output_dir_that_is_a_file(tmp_path, data_dir, capsys):
    target = tmp_path / "afile"
    target.write_text("mine")
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(target / "run"), "--epochs", "1",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"error: {target / 'run'}: Not a directory; check that the path exists, is the right kind "
        f"(file or directory) and that you may write to it\n"
    )
    assert "Traceback" not in err
    assert target.read_text() == "mine"


def test_named_pipe_as_model_json(tmp_path, capsys):
    import os

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.safetensors").write_bytes(b"x")
    os.mkfifo(run_dir / "model.json")
    code = main(["predict", str(run_dir), str(tmp_path / "image.png")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir / 'model.json'}: model metadata is not a regular file; pass a regular file\n"
    )


def test_empty_test_split_rejected_before_training(tmp_path, capsys):
    import numpy as np

    from synthetic import make_dataset, write_idx

    data_dir = make_dataset(tmp_path / "data")
    write_idx(data_dir / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), dtype=np.uint8))
    write_idx(data_dir / "t10k-labels-idx1-ubyte.gz", np.zeros((0,), dtype=np.uint8))
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(tmp_path / "r"), "--quiet"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {data_dir / 't10k-images-idx3-ubyte.gz'} and {data_dir / 't10k-labels-idx1-ubyte.gz'} "
        f"hold no samples; use the complete test files\n"
    )
    assert not (tmp_path / "r").exists()


def test_overflowing_lr_rejected_before_training(tmp_path, data_dir, capsys):
    run_dir = tmp_path / "r"
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir), "--lr", "1e38",
                 "--quiet"])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: invalid options: --lr 1e+38 is too large: Adam's first step size lr / (1 - beta1) = 1e+39 does not "
        "fit in a float32; use a learning rate below 3.4e+37\n"
    )
    assert not run_dir.exists()


def test_output_dir_name_not_utf8(tmp_path, data_dir, capsys):
    import os

    run_dir = tmp_path / os.fsdecode(b"run-\xff")
    code = main(["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 0
    assert "Logging error" not in err
    assert "Could not write" not in err
    assert "run-\\udcff" in (run_dir / "report.html").read_text(encoding="utf-8")
    assert "run-\\udcff" in (run_dir / "train.log").read_text(encoding="utf-8")


def test_evaluate_overflowing_model_rejected(trained_run, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file
    from test_model_io import make_overflowing

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    save_file(make_overflowing(load_file(run_dir / "model.safetensors")), run_dir / "model.safetensors")
    plot_before = (run_dir / "confusion_matrix.png").read_bytes()

    data_dir = trained_run.parent / "data"
    code = main(["evaluate", str(run_dir), "--data-dir", str(data_dir), "--offline", "--quiet"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir}: the model gives NaN or infinite outputs on the test split, so its weights or "
        f"normalisation are damaged; train again or restore the run from a backup\n"
    )
    assert (run_dir / "confusion_matrix.png").read_bytes() == plot_before
