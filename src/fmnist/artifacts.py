"""Files of a run directory: atomic writes, the saved model and its metadata.

The weights are stored as safetensors, which holds only tensors and loads without
executing code. ``model.json`` records how they were made: format version,
architecture, normalisation, class names, configuration, data digests and metrics.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.architecture import ARCHITECTURE, STATE_SHAPES
from fmnist.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
# Every file that 'fmnist train' writes into a run directory.
RUN_FILES = frozenset({
    WEIGHTS_FILE, METADATA_FILE, "metrics.json", "history.json", "history.csv", "history.png",
    "confusion_matrix.png", "report.html", "misclassified.npz", "config.json", "config.toml",
    "checkpoint.pt", "train.log",
})


@functools.cache
def _umask() -> int:
    # The umask can only be read by setting it, so set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, fsync it and rename it onto ``path``.

    A reader sees either the old file or the complete new one, even when the process
    is killed part-way. On an exception the temporary file is removed. The new file
    gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as error:
        raise type(error)(error.errno, error.strerror, str(path)) from None
    os.close(fd)
    temporary = Path(name)
    try:
        os.chmod(temporary, 0o666 & ~_umask())
        yield temporary
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        # Name the file the user asked for, not the temporary one.
        raise type(error)(error.errno, error.strerror, str(path)) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def escape_surrogates(text: str) -> str:
    """Return ``text`` with surrogate escapes written as backslash escapes, such as ``\\udcff``.

    Python decodes file names that are not valid UTF-8 into surrogate escapes, which UTF-8
    cannot encode, so a strict stream, file or plotting library would fail on them.
    """
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically, with surrogate escapes written as backslash escapes."""
    atomic_write_bytes(path, escape_surrogates(text).encode("utf-8"))


def non_finite_outputs_error(model_path: Path, scope: str = "") -> CheckpointError:
    """Return the error for a model whose outputs are NaN or infinite ``scope``, such as "on the test split"."""
    where = f" {scope}" if scope else ""
    return CheckpointError(
        f"{model_path}: the model gives NaN or infinite outputs{where}, so its weights or normalisation are "
        f"damaged; train again or restore the run from a backup"
    )


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def check_not_special(path: Path, what: str, error_class: type[Exception] = CheckpointError) -> None:
    """Raise ``error_class`` when ``path`` exists but is not a regular file.

    Reading a named pipe or a device would block or never end, so such paths are
    rejected before they are opened. A missing path is left to the reader's own message.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise error_class(f"{path}: {what} is {kind}; pass a regular file")


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file of a run directory, raising CheckpointError with the file name on failure."""
    check_not_special(path, what)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} not found; is this a run directory written by 'fmnist train'?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: {what} cannot be read ({error}); the file is damaged") from None
    except RecursionError:
        # The json module recurses once per nesting level, so thousands of nested arrays exhaust the stack.
        raise CheckpointError(f"{path}: {what} cannot be read (nested too deeply); the file is damaged") from None


def resolve_model_paths(model: Path) -> tuple[Path, Path]:
    """Return the weights and metadata paths for a run directory or a weights file."""
    model = Path(model)
    if model.is_dir():
        return model / WEIGHTS_FILE, model / METADATA_FILE
    if model.exists():
        return model, model.with_name(METADATA_FILE)
    raise CheckpointError(f"{model}: no such run directory or model file; pass the directory that 'fmnist train' wrote")


def read_metadata(path: Path) -> dict[str, Any]:
    """Read and check ``model.json``: format version, architecture and normalisation."""
    metadata = read_json(path, "model metadata")
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: model metadata is not a JSON object; the file is damaged")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r} is not supported, expected {FORMAT_VERSION}; "
            f"use the fmnist release that wrote it"
        )
    architecture = metadata.get("architecture")
    name = architecture.get("name") if isinstance(architecture, dict) else None
    if name != ARCHITECTURE:
        raise CheckpointError(f"{path}: architecture {name!r} is not supported, expected {ARCHITECTURE}")
    dropout = architecture.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise CheckpointError(
            f"{path}: architecture dropout is {_shorten(dropout)}, expected a number in [0, 1); the file is damaged"
        )
    _check_normalisation(metadata.get("normalisation"), path)
    class_names = metadata.get("class_names")
    if not (isinstance(class_names, list) and len(class_names) == 10 and all(isinstance(n, str) for n in class_names)):
        raise CheckpointError(f"{path}: class_names must be a list of 10 names; the file is damaged")
    return metadata


# Normalised pixels are (pixel / 255 - mean) / std, so mean and std are statistics of values
# in [0, 1]. The std of 8-bit pixels is at least (1 / 255) / sqrt(pixel count) unless every
# pixel is equal, which is above MIN_PIXEL_STD for up to about 1.5e9 pixels (2 million images).
MIN_PIXEL_STD = 1e-7


def _check_normalisation(normalisation: Any, path: Path) -> None:
    if not (isinstance(normalisation, dict) and "mean" in normalisation and "std" in normalisation):
        raise CheckpointError(f"{path}: normalisation mean and std are missing; the file is damaged")
    for key in ("mean", "std"):
        value = normalisation[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckpointError(f"{path}: normalisation {key} is {_shorten(value)}, expected a number; the file is damaged")
    # Comparisons also reject NaN, and compare integers of any size without converting them to float.
    if not 0 <= normalisation["mean"] <= 1:
        raise CheckpointError(
            f"{path}: normalisation mean is {_shorten(normalisation['mean'])}, expected a number between 0 and 1; "
            f"the file is damaged"
        )
    if not MIN_PIXEL_STD <= normalisation["std"] <= 1:
        raise CheckpointError(
            f"{path}: normalisation std is {_shorten(normalisation['std'])}, expected a number between "
            f"{MIN_PIXEL_STD} and 1; the file is damaged"
        )


def _shorten(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_not_run_file(output: Path, option: str = "--output") -> None:
    """Raise ConfigError when ``output`` is an existing file of a run directory, such as its model.

    A directory counts as a run directory when it contains model.json or config.json.
    Commands that write a file the user names call this first, so that a mistyped
    ``--output`` cannot replace a run's own files.
    """
    output = Path(output)
    directory = output.parent
    is_run_directory = (directory / METADATA_FILE).is_file() or (directory / "config.json").is_file()
    if output.name in RUN_FILES and is_run_directory and output.exists():
        raise ConfigError(
            f"{option} {output}: this is the {output.name} of the run directory {directory}, "
            f"and writing it would replace the run's own file; choose another file name"
        )


def check_finite_weights(weights: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError naming the first tensor of ``weights`` that float32 cannot represent.

    ``weights`` maps parameter names to numpy arrays or CPU torch tensors. A tensor must
    be of a floating-point type, finite and within the float32 range, because a model
    with NaN or infinite weights gives NaN probabilities for every image instead of failing.
    """
    for key in sorted(weights):
        values = np.asarray(weights[key])
        if values.dtype.kind != "f":
            raise CheckpointError(
                f"{path}: tensor {key} has dtype {values.dtype}, expected floating-point weights; "
                f"train again or restore the file from a backup"
            )
        if not np.isfinite(values).all():
            raise CheckpointError(
                f"{path}: tensor {key} contains NaN or infinite values; train again or restore the file from a backup"
            )
        if values.size and np.abs(values).max() > np.finfo(np.float32).max:
            raise CheckpointError(
                f"{path}: tensor {key} has values beyond the float32 range; train again or restore the file from a backup"
            )


def check_state_shapes(shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    """Raise CheckpointError unless ``shapes`` has exactly the parameter names and shapes of the classifier."""
    missing = sorted(set(STATE_SHAPES) - set(shapes))
    unexpected = sorted(set(shapes) - set(STATE_SHAPES))
    if unexpected and missing:
        raise CheckpointError(
            f"{path}: weights belong to another architecture (unexpected keys {', '.join(unexpected[:4])}; "
            f"missing {', '.join(missing[:4])}); expected {ARCHITECTURE}"
        )
    if missing:
        raise CheckpointError(f"{path}: weights are missing keys {', '.join(missing)}; the file is incomplete")
    if unexpected:
        raise CheckpointError(f"{path}: weights have unexpected keys {', '.join(unexpected[:4])}; expected {ARCHITECTURE}")
    for key, expected in STATE_SHAPES.items():
        if tuple(shapes[key]) != expected:
            raise CheckpointError(
                f"{path}: tensor {key} has shape {tuple(shapes[key])}, expected {expected} for {ARCHITECTURE}"
            )
