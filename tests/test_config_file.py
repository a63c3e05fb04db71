"""Tests of fmnist.config_file: --config TOML files and the config.toml of each run."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmnist import config_file
from fmnist.cli import main
from fmnist.config import PRESETS, TrainConfig
from fmnist.errors import ConfigError

VALID_KEYS = (
    "data_dir, output_dir, offline, seed, val_fraction, epochs, batch_size, lr, betas, weight_decay, dropout, "
    "lr_start_factor, lr_end_factor, patience, min_delta, label_smoothing, augment_shift, threads, device, precision, preset"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def read_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        config_file.read_config_file(path)
    assert caught.value.exit_code == 2
    return str(caught.value)


# Reading.


def test_read_both_spellings_and_types(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        'lr = 2e-3\nbatch-size = 256\nbetas = [0.8, 0.99]\noffline = true\nval_fraction = 1\ndata_dir = "data"\n'
        'output-dir = "/abs/run"\npreset = "best"\n',
    )

    settings = config_file.read_config_file(path)

    assert settings == {
        "lr": 0.002,
        "batch_size": 256,
        "betas": (0.8, 0.99),
        "offline": True,
        "val_fraction": 1.0,
        "data_dir": tmp_path / "data",
        "output_dir": Path("/abs/run"),
        "preset": "best",
    }
    assert isinstance(settings["val_fraction"], float)


def test_home_directory_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path / "c.toml", 'data_dir = "~/fashion"\n')

    assert config_file.read_config_file(path) == {"data_dir": tmp_path / "home" / "fashion"}


def test_unknown_key_suggests_closest(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "epochs = 3\nbatch_sise = 64\n")
    assert read_error(path) == f"{path}: unknown setting 'batch_sise'; did you mean 'batch_size'? valid settings: {VALID_KEYS}"


def test_unknown_key_without_close_match(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[train]\nepochs = 3\n")
    assert read_error(path) == f"{path}: unknown setting 'train'; valid settings: {VALID_KEYS}"


def test_extra_is_not_a_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "extra = {}\n")
    assert read_error(path).startswith(f"{path}: unknown setting 'extra'; ")


@pytest.mark.parametrize(
    "line, expected",
    [
        ('epochs = "3"', "setting 'epochs' must be an integer, got '3' (string)"),
        ("epochs = 3.0", "setting 'epochs' must be an integer, got 3.0 (float)"),
        ("epochs = true", "setting 'epochs' must be an integer, got True (boolean)"),
        ("lr = true", "setting 'lr' must be a number, got True (boolean)"),
        ('lr = "0.1"', "setting 'lr' must be a number, got '0.1' (string)"),
        ("offline = 1", "setting 'offline' must be true or false, got 1 (integer)"),
        ("betas = [0.9]", "setting 'betas' must be a list of 2 numbers, got [0.9] (array)"),
        ('betas = [0.9, "x"]', "setting 'betas' must be a number, got 'x' (string)"),
        ("betas = 0.9", "setting 'betas' must be a list of 2 numbers, got 0.9 (float)"),
        ("data-dir = 5", "setting 'data-dir' must be a path string, got 5 (integer)"),
        ('data_dir = ""', "setting 'data_dir' must be a path string, got '' (string)"),
        ("preset = 1", "setting 'preset' must be a string, got 1 (integer)"),
        ("threads = {count = 2}", "setting 'threads' must be an integer, got {'count': 2} (table)"),
    ],
)
def test_wrong_type(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path / "c.toml", line + "\n")
    assert read_error(path) == f"{path}: {expected}; fix the file"


def test_key_given_twice(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "batch_size = 1\nbatch-size = 2\n")
    assert read_error(path) == f"{path}: setting 'batch_size' is given twice (as 'batch_size' and 'batch-size'); keep one"


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "epochs = 3\nlr = \n")
    assert read_error(path) == f"{path}: invalid TOML (Invalid value (at line 2, column 6)); fix the file"


def test_missing_file(tmp_path: Path) -> None:
    assert read_error(tmp_path / "none.toml") == (
        f"--config {tmp_path / 'none.toml'}: file not found; pass a TOML file such as RUN_DIR/config.toml"
    )


def test_directory_given(tmp_path: Path) -> None:
    assert read_error(tmp_path) == f"--config {tmp_path}: is a directory; pass its config.toml or another TOML file"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"epochs = 3 # \xff\n")
    assert read_error(path) == f"--config {path}: is not UTF-8 text (invalid start byte at byte 13); save it as UTF-8"


# Priorities: defaults < the file's preset < the file < --preset < options.


def test_file_values_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "epochs = 4\nlr = 0.01\n")

    config = config_file.config_from_file(path, None, {})

    assert (config.epochs, config.lr, config.batch_size) == (4, 0.01, TrainConfig().batch_size)


def test_options_over_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "epochs = 4\nlr = 0.01\n")

    config = config_file.config_from_file(path, None, {"epochs": 2, "seed": 7})

    assert (config.epochs, config.lr, config.seed) == (2, 0.01, 7)


def test_file_preset_under_file_values(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'preset = "best"\nepochs = 3\n')

    config = config_file.config_from_file(path, None, {})

    assert config.preset == "best"
    assert config.epochs == 3
    assert config.lr == PRESETS["best"]["lr"]


def test_option_preset_over_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "epochs = 3\nlr = 0.5\nseed = 4\n")

    config = config_file.config_from_file(path, "best", {"preset": "best", "lr": 0.003})

    assert config.preset == "best"
    assert config.epochs == PRESETS["best"]["epochs"]
    assert config.lr == 0.003
    assert config.seed == 4


# Writing.


def test_written_file_reads_back_to_same_config(tmp_path: Path) -> None:
    config = TrainConfig(
        data_dir=tmp_path / 'odd "dir"\\with\ttab and ü',
        output_dir=tmp_path / "run",
        offline=True,
        seed=12,
        epochs=7,
        lr=1e-05,
        betas=(0.85, 0.995),
        threads=3,
        preset="best",
    )
    path = tmp_path / "config.toml"

    config_file.write_config_file(path, config)
    again = config_file.config_from_file(path, None, {})

    expected = config.to_dict()
    expected["output_dir"] = None
    assert again.to_dict() == expected


def test_written_file_leaves_out_output_dir_and_none(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"

    config_file.write_config_file(path, TrainConfig(output_dir=tmp_path / "run", data_dir=tmp_path))

    document = tomllib.loads(path.read_text(encoding="utf-8"))
    assert "output_dir" not in document
    assert "threads" not in document
    assert "preset" not in document
    assert "extra" not in document
    assert document["data_dir"] == str(tmp_path)
    assert path.read_text().startswith("# The configuration of this run, written by fmnist ")


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_round_trip(value: float) -> None:
    assert tomllib.loads(f"x = {config_file.toml_value(value)}")["x"] == value


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_string_round_trip(value: str) -> None:
    assert tomllib.loads(f"x = {config_file.toml_value(value)}")["x"] == value


def test_non_finite_floats_written() -> None:
    assert config_file.toml_value(math.inf) == "inf"
    assert config_file.toml_value(-math.inf) == "-inf"
    assert math.isnan(tomllib.loads(f"x = {config_file.toml_value(math.nan)}")["x"])


def test_path_not_utf8_skips_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.toml"

    config_file.write_config_file(path, TrainConfig(data_dir=Path("/data/\udcff")))

    assert not path.exists()
    assert caplog.messages == [f"Not writing {path}: a setting is not valid UTF-8 (surrogates not allowed)"]


# The command line.


def history_without_seconds(run_dir: Path) -> list[dict]:
    records = json.loads((run_dir / "history.json").read_text())
    for record in records:
        record.pop("seconds")
    return records


def test_run_repeated_from_its_config(tmp_path: Path, data_dir: Path) -> None:
    first = tmp_path / "first"
    assert main([
        "train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(first),
        "--epochs", "3", "--batch-size", "32", "--lr", "0.002", "--seed", "5", "--quiet",
    ]) == 0
    saved = tomllib.loads((first / "config.toml").read_text())
    assert (saved["epochs"], saved["batch_size"], saved["lr"], saved["seed"]) == (3, 32, 0.002, 5)

    second = tmp_path / "second"
    assert main(["train", "--config", str(first / "config.toml"), "--output-dir", str(second), "--quiet"]) == 0

    assert history_without_seconds(second) == history_without_seconds(first)
    assert len(history_without_seconds(first)) == 3
    first_config = json.loads((first / "model.json").read_text())["config"]
    second_config = json.loads((second / "model.json").read_text())["config"]
    assert first_config.pop("output_dir") == str(first)
    assert second_config.pop("output_dir") == str(second)
    assert second_config == first_config


def test_options_override_file_on_command_line(tmp_path: Path, data_dir: Path, capsys) -> None:
    path = write(tmp_path / "c.toml", f'data_dir = "{data_dir}"\noffline = true\nepochs = 3\nbatch_size = 32\n')

    code = main(["train", "--config", str(path), "--epochs", "1", "--output-dir", str(tmp_path / "r"), "--quiet", "--json"])

    assert code == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 1
    assert json.loads((tmp_path / "r" / "model.json").read_text())["config"]["batch_size"] == 32


def test_repeat_without_output_dir_writes_new_run(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tmp_path / "first"
    assert main([
        "train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(first), "--epochs", "1",
        "--batch-size", "64", "--quiet",
    ]) == 0
    monkeypatch.chdir(tmp_path)

    assert main(["train", "--config", str(first / "config.toml"), "--quiet"]) == 0

    (repeat,) = (tmp_path / "runs").iterdir()
    assert (repeat / "model.json").exists()
    assert sorted(path.name for path in first.iterdir()) == sorted(path.name for path in repeat.iterdir())


def test_invalid_file_exit_2_before_any_work(tmp_path: Path, data_dir: Path, capsys) -> None:
    path = write(tmp_path / "c.toml", "lr = -1\n")

    code = main(["train", "--config", str(path), "--data-dir", str(data_dir), "--offline", "--output-dir", str(tmp_path / "r")])

    assert code == 2
    assert capsys.readouterr().err == f"error: {path}: invalid options: --lr must be a positive number, got -1.0; fix the file\n"
    assert not (tmp_path / "r").exists()


def test_unknown_key_exit_2(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "c.toml", "learning_rate = 0.1\n")

    assert main(["train", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {path}: unknown setting 'learning_rate'; valid settings: {VALID_KEYS}\n"


def test_config_with_resume_rejected(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "c.toml", "epochs = 1\n")

    assert main(["train", "--config", str(path), "--resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "error: --config cannot be combined with --resume, which reads the configuration stored in the run "
        "directory; drop --config\n"
    )


def test_unknown_preset_in_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'preset = "fastest"\n')

    with pytest.raises(ConfigError) as caught:
        config_file.config_from_file(path, None, {})

    assert str(caught.value) == (
        f"{path}: invalid options: --preset must be one of {', '.join(sorted(PRESETS))}, got 'fastest'; fix the file"
    )
