"""Export a trained model for deployment as TorchScript or ONNX (``fmnist export``).

The exported model contains the whole inference path. Its input is images shaped
``(N, 28, 28)`` with pixel values 0-255, light objects on a black background as in
Fashion-MNIST. It scales and standardises them with the normalisation of the train
split, runs the MLP and returns probabilities shaped ``(N, 10)``, in the order of the
class names in ``model.json``. The TorchScript model accepts uint8 or float32 images;
the ONNX model's input is float32. Both files carry ``model.json`` itself: TorchScript
as the extra file ``model.json``, ONNX as the metadata property ``fmnist.model_json``.

This module imports no torch, so that the command line can show its options quickly;
fmnist.deployable builds and saves the torch module.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fmnist.artifacts import atomic_path, check_not_run_file
from fmnist.errors import ConfigError

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
DEFAULT_FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
METADATA_KEY = "fmnist.model_json"
TORCHSCRIPT_METADATA_FILE = "model.json"
# torch.onnx.export (with dynamo=True, its default since torch 2.9) needs both packages.
ONNX_PACKAGES = ("onnx", "onnxscript")


def default_output(model_path: Path, export_format: str) -> Path:
    """Return the default file of an export: in the run directory, next to the weights."""
    model_path = Path(model_path)
    directory = model_path if model_path.is_dir() else model_path.parent
    return directory / DEFAULT_FILE_NAMES[export_format]


def require_onnx() -> None:
    """Raise ConfigError unless the packages that the ONNX export needs are installed."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"--format onnx needs the packages {', '.join(missing)}, which are not installed; "
            f"run pip install 'fmnist[onnx]' or use --format torchscript"
        )


def export_model(model_path: Path, export_format: str, output: Path | None = None) -> Path:
    """Write the model of ``model_path`` as ``export_format`` ("onnx" or "torchscript") and return the file.

    The file is written under a temporary name and renamed, so a failed export leaves
    no partial file. Raises ConfigError for an unknown format or missing ONNX packages,
    and CheckpointError when the run directory cannot be loaded.
    """
    if export_format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {export_format!r}")
    if export_format == "onnx":
        require_onnx()
    from fmnist import deployable

    output = Path(output) if output is not None else default_output(model_path, export_format)
    check_not_run_file(output)
    model, metadata = deployable.deployable_model(model_path)

    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as temporary:
        if export_format == "torchscript":
            deployable.save_torchscript(model, metadata, temporary)
        else:
            deployable.save_onnx(model, metadata, temporary)
    logger.debug("Exported %s as %s to %s", model_path, export_format, output)
    return output
