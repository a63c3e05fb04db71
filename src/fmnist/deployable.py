"""The classifier as one torch module for deployment, and its TorchScript and ONNX writers."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmnist import artifacts, model_io
from fmnist.errors import ConfigError
from fmnist.export import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, TORCHSCRIPT_METADATA_FILE


class DeployableClassifier(nn.Module):
    """The classifier with its input normalisation before it and softmax after it.

    Takes images ``(N, 28, 28)`` with pixel values 0-255, uint8 or float, and returns
    probabilities ``(N, 10)``.
    """

    def __init__(self, model: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.model = model
        # The arithmetic of FashionMNISTDataset: pixels / (255 std) - mean / std.
        self.register_buffer("scale", torch.tensor(1.0 / (255.0 * std), dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(mean / std, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        normalised = images.to(torch.float32) * self.scale - self.shift
        return torch.softmax(self.model(normalised), dim=1)


def deployable_model(model_path: Path) -> tuple[DeployableClassifier, dict[str, Any]]:
    """Load the model of a run directory, wrapped for export in eval mode, and its metadata."""
    model, metadata = model_io.load_model(model_path)
    normalisation = metadata["normalisation"]
    wrapped = DeployableClassifier(model, float(normalisation["mean"]), float(normalisation["std"]))
    wrapped.eval()
    for parameter in wrapped.parameters():
        parameter.requires_grad_(False)

    # Finite weights can still overflow to NaN. Random images catch weights that do so for any input.
    probe = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.isfinite(wrapped(probe)).all():
            raise artifacts.non_finite_outputs_error(model_path)
    return wrapped, metadata


@contextlib.contextmanager
def _quiet_exporters():
    """Hide the exporters' deprecation warnings and their log lines about optional packages such as torchvision."""
    onnx_logger = logging.getLogger("torch.onnx")
    previous = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        onnx_logger.setLevel(previous)


def save_torchscript(model: DeployableClassifier, metadata: dict[str, Any], path: Path) -> None:
    """Write ``model`` as TorchScript to ``path``, with ``metadata`` as the extra file model.json."""
    # NOTE: torch 2.13 marks torch.jit.script, save and load as deprecated; they still work.
    with _quiet_exporters():
        scripted = torch.jit.script(model)
        # A file object, because torch.jit.save rejects path strings that are not valid UTF-8.
        with open(path, "wb") as file:
            torch.jit.save(scripted, file, _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)})


def save_onnx(model: DeployableClassifier, metadata: dict[str, Any], path: Path) -> None:
    """Write ``model`` as one ONNX file with a dynamic batch size and ``metadata`` as a metadata property."""
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise ConfigError(
            f"--format onnx needs torch 2.5 or newer for its torch.export-based ONNX exporter, found "
            f"{torch.__version__}; upgrade torch or use --format torchscript"
        )
    example = torch.zeros(2, 28, 28, dtype=torch.float32)
    with _quiet_exporters():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            dynamo=True,
            verbose=False,
        )
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    # One self-contained file: the weights (about 1.2 MB) go inside it, not into a .data file.
    program.save(str(path), external_data=False)
