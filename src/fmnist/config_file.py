"""Training configuration files: ``fmnist train --config FILE.toml`` and each run's ``config.toml``.

A configuration file is TOML with one top-level key per TrainConfig field, spelled
as the field (``batch_size``) or as the option (``batch-size``). The settings of a
training run come, from lowest to highest priority, from: the defaults, the preset
named in the file, the file's own values, the preset given by ``--preset``, and the
options given on the command line.

Every run directory gets a ``config.toml`` holding its resolved configuration, so
``fmnist train --config RUN_DIR/config.toml`` repeats the run. That file leaves
``output_dir`` out, so a repeat writes a new run directory instead of the old one.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import types
import typing
from pathlib import Path
from typing import Any

from fmnist import artifacts
from fmnist.config import PRESETS, TrainConfig
from fmnist.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10, where the package depends on tomli instead
    import tomli as tomllib

logger = logging.getLogger(__name__)

CONFIG_TOML = "config.toml"
# Fields that a file cannot set: free-form extras, which have no option either.
NOT_IN_FILES = ("extra",)
# Fields that a saved config.toml leaves out, so that repeating a run writes a new run directory.
NOT_SAVED = ("output_dir",)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML configuration file and return its settings by TrainConfig field name.

    Values are converted to the field types: paths become Path objects, relative ones
    taken relative to the file's directory, and lists become tuples. Raises ConfigError
    naming the file and the key for an unreadable file, invalid TOML, an unknown key or
    a value of the wrong type. Value ranges are checked later by TrainConfig.validate.
    """
    path = Path(path)
    from fmnist.artifacts import check_not_special

    if not path.is_dir():  # a directory gets its own message below
        check_not_special(path, "configuration file", ConfigError)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found; pass a TOML file such as RUN_DIR/{CONFIG_TOML}") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path}: is a directory; pass its {CONFIG_TOML} or another TOML file") from None
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot be read ({error.strerror}); check its permissions") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"--config {path}: is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error}); fix the file") from None

    hints = field_types()
    settings: dict[str, Any] = {}
    for key, value in document.items():
        name = key.replace("-", "_")
        if name not in hints:
            raise ConfigError(_unknown_key_message(path, key, hints))
        if name in settings:
            raise ConfigError(f"{path}: setting {name!r} is given twice (as {name!r} and {name.replace('_', '-')!r}); keep one")
        settings[name] = _convert(path, key, value, hints[name])
    return settings


def field_types() -> dict[str, Any]:
    """Return the type of every TrainConfig field that a configuration file may set, in field order."""
    hints = typing.get_type_hints(TrainConfig)
    return {field.name: hints[field.name] for field in dataclasses.fields(TrainConfig) if field.name not in NOT_IN_FILES}


def _unknown_key_message(path: Path, key: str, hints: dict[str, Any]) -> str:
    valid = list(hints)
    close = difflib.get_close_matches(key.replace("-", "_"), valid, n=1)
    suggestion = f"did you mean {close[0]!r}? " if close else ""
    return f"{path}: unknown setting {key!r}; {suggestion}valid settings: {', '.join(valid)}"


def _convert(path: Path, key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` as the type ``hint`` requires, or raise ConfigError naming ``key``."""
    arguments = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in arguments:
        # TOML has no null, so an optional setting is left out of the file to keep it None.
        (hint,) = (argument for argument in arguments if argument is not type(None))

    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if hint is Path and isinstance(value, str) and value:
        resolved = Path(value).expanduser()
        return resolved if resolved.is_absolute() else path.parent / resolved
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        items = typing.get_args(hint)
        if len(value) == len(items):
            return tuple(_convert(path, key, item, item_hint) for item, item_hint in zip(value, items))
    raise ConfigError(
        f"{path}: setting {key!r} must be {_describe_type(hint)}, got {value!r} ({_toml_type(value)}); fix the file"
    )


def _describe_type(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        return f"a list of {len(items)} {_describe_type(items[0]).removeprefix('a ')}s"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path string"}
    return names.get(hint, str(hint))


def _toml_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


def config_from_file(path: Path, preset: str | None, options: dict[str, Any]) -> TrainConfig:
    """Build the configuration of ``fmnist train --config path``.

    ``preset`` is the value of ``--preset`` and ``options`` contains the other options
    given on the command line, by field name; both override the file (see the module docstring).
    Raises ConfigError naming the file when the file's settings alone are invalid.
    """
    values = read_config_file(path)
    file_preset = values.pop("preset", None)
    try:
        TrainConfig.from_preset(file_preset, **values).validate()
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}; fix the file") from None
    settings = dict(PRESETS.get(file_preset, {}))
    settings.update(values)
    if preset is not None:
        settings.update(PRESETS.get(preset, {}))
    settings.update({name: value for name, value in options.items() if name != "preset"})
    return TrainConfig.from_preset(preset if preset is not None else file_preset, **settings)


def write_config_file(path: Path, config: TrainConfig) -> None:
    """Write the settings of ``config`` to ``path`` as TOML that ``--config`` reads back to the same configuration.

    Settings that are None and the fields in NOT_SAVED are left out.
    """
    from fmnist import __version__

    lines = [
        f"# The configuration of this run, written by fmnist {__version__}. Repeat the run with",
        f"#   fmnist train --config RUN_DIR/{CONFIG_TOML} [--output-dir NEW_RUN_DIR]",
        "# output_dir is left out, so a repeat writes a new run directory. Options given on",
        "# the command line override the settings here.",
    ]
    for name in field_types():
        value = getattr(config, name)
        if value is None or name in NOT_SAVED:
            continue
        lines.append(f"{name} = {toml_value(value)}")
    try:
        content = ("\n".join(lines) + "\n").encode("utf-8")
    except UnicodeEncodeError as error:
        # A path with bytes that are not UTF-8 has no TOML spelling.
        logger.warning("Not writing %s: a setting is not valid UTF-8 (%s)", path, error.reason)
        return
    artifacts.atomic_write_bytes(Path(path), content)


def toml_value(value: Any) -> str:
    """Return ``value`` (bool, int, float, str, Path, or a list or tuple of them) as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        # repr gives the shortest text that reads back as the same float, such as 0.001 or 1e-05.
        return repr(value)
    if isinstance(value, (str, Path)):
        return _toml_string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a TOML value")


def _toml_string(text: str) -> str:
    """Return ``text`` as a TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = []
    for character in text:
        if character in ('"', "\\"):
            escaped.append("\\" + character)
        elif ord(character) < 0x20 or ord(character) == 0x7F:
            escaped.append(f"\\u{ord(character):04x}")
        else:
            escaped.append(character)
    return '"' + "".join(escaped) + '"'
