import pytest

from fmnist.config import TrainConfig
from fmnist.errors import ConfigError


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, "--lr must be a positive number, got 0.0"),
        ({"lr": -1e-3}, "--lr must be a positive number, got -0.001"),
        ({"lr": float("nan")}, "--lr must be a positive number, got nan"),
        ({"lr_start_factor": 0.0}, "--lr-start-factor must be in (0, 1], got 0.0"),
        ({"lr_end_factor": 1.5}, "--lr-end-factor must be in (0, 1], got 1.5"),
        ({"val_fraction": 0.0}, "--val-fraction must be between 0 and 1 (exclusive), got 0.0"),
        ({"val_fraction": 1.0}, "--val-fraction must be between 0 and 1 (exclusive), got 1.0"),
        ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
        ({"patience": 0}, "--patience must be at least 1, got 0"),
        ({"epochs": 0}, "--epochs must be at least 1, got 0"),
        ({"dropout": 1.0}, "--dropout must be in [0, 1), got 1.0"),
        ({"min_delta": -0.1}, "--min-delta must be a number >= 0, got -0.1"),
        ({"weight_decay": -1.0}, "--weight-decay must be a number >= 0, got -1.0"),
        ({"betas": (0.9, 1.0)}, "--betas must each be in [0, 1), got 1.0"),
        ({"threads": 0}, "--threads must be at least 1, got 0"),
    ],
)
def test_invalid_option_message(changes, message):
    config = TrainConfig(**changes)
    with pytest.raises(ConfigError) as raised:
        config.validate()
    assert str(raised.value) == f"invalid options: {message}"
    assert raised.value.exit_code == 2


def test_every_problem_listed_at_once():
    with pytest.raises(ConfigError) as raised:
        TrainConfig(lr=0.0, patience=0).validate()
    assert str(raised.value) == "invalid options: --lr must be a positive number, got 0.0; --patience must be at least 1, got 0"


def test_defaults_are_valid():
    TrainConfig().validate()


def test_to_dict_is_json_ready(tmp_path):
    values = TrainConfig(data_dir=tmp_path).to_dict()
    assert values["data_dir"] == str(tmp_path)
    assert values["betas"] == [0.9, 0.999]
