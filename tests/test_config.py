import pytest

from fmnist.config import PRESET_FIELDS, PRESETS, TrainConfig
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
        ({"threads": 0}, "--threads must be between 1 and 512, got 0"),
        ({"threads": 50000}, "--threads must be between 1 and 512, got 50000"),
        ({"seed": -1}, "--seed must be between 0 and 4294967295, got -1"),
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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label_smoothing": 1.0}, "--label-smoothing must be in [0, 1), got 1.0"),
        ({"label_smoothing": -0.1}, "--label-smoothing must be in [0, 1), got -0.1"),
        ({"augment_shift": -1}, "--augment-shift must be between 0 and 8 pixels, got -1"),
        ({"augment_shift": 9}, "--augment-shift must be between 0 and 8 pixels, got 9"),
        ({"preset": "fastest"}, "--preset must be one of best, got 'fastest'"),
        ({"lr": 1e38}, "--lr 1e+38 is too large: Adam's first step size lr / (1 - beta1) = 1e+39 does not fit in "
                       "a float32; use a learning rate below 3.4e+37"),
        ({"lr": 1e35, "betas": (0.999999, 0.999)}, "--lr 1e+35 is too large: Adam's first step size lr / (1 - beta1) "
                                                    "= 1e+41 does not fit in a float32; use a learning rate below 3.4e+32"),
    ],
)
def test_invalid_recipe_option_message(changes, message):
    with pytest.raises(ConfigError) as raised:
        TrainConfig(**changes).validate()
    assert str(raised.value) == f"invalid options: {message}"


def test_presets_are_valid_recipes():
    for name, values in PRESETS.items():
        assert set(values) <= set(PRESET_FIELDS), name
        TrainConfig.from_preset(name).validate()


def test_from_preset_applies_preset_values():
    config = TrainConfig.from_preset("best")
    for field, value in PRESETS["best"].items():
        assert getattr(config, field) == value, field
    assert config.preset == "best"
    assert config.to_dict()["preset"] == "best"


def test_explicit_settings_override_preset():
    config = TrainConfig.from_preset("best", epochs=3, dropout=0.0, seed=7)
    assert config.epochs == 3
    assert config.dropout == 0.0
    assert config.seed == 7
    assert config.lr == PRESETS["best"]["lr"]


def test_unset_settings_keep_preset_or_default():
    config = TrainConfig.from_preset("best", epochs=None, threads=None, min_delta=None)
    assert config.epochs == PRESETS["best"]["epochs"]
    assert config.threads is None
    assert config.min_delta == TrainConfig().min_delta


def test_no_preset_gives_defaults():
    assert TrainConfig.from_preset(None, lr=None) == TrainConfig()


def test_largest_valid_lr_trains_one_step():
    import torch

    config = TrainConfig(lr=3e37)
    config.validate()
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([weight], lr=config.lr, betas=config.betas)
    weight.sum().backward()
    optimizer.step()
