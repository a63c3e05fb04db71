"""Save and load the classifier's weights with the metadata that describes them."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from fmnist import artifacts
from fmnist.errors import CheckpointError
from fmnist.model import build_model

# Prefixes that wrappers add to parameter names: DistributedDataParallel and
# DataParallel add "module.", torch.compile adds "_orig_mod.".
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``state`` with wrapper prefixes removed and every tensor on the CPU."""
    cleaned = {}
    for key, tensor in state.items():
        name = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    stripped = True
        cleaned[name] = tensor.detach().to("cpu").contiguous()
    return cleaned


def save_model(run_dir: Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``run_dir`` atomically."""
    state = clean_state_dict(model.state_dict())
    weights = save_safetensors_bytes(state, metadata={"format_version": str(artifacts.FORMAT_VERSION)})
    artifacts.atomic_write_bytes(Path(run_dir) / artifacts.WEIGHTS_FILE, weights)
    artifacts.atomic_write_json(Path(run_dir) / artifacts.METADATA_FILE, metadata)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file or a ``torch.save`` file, never running code.

    ``torch.save`` files are opened with ``weights_only=True``, which rejects any pickle
    that would construct objects other than tensors and plain containers.
    """
    path = Path(path)
    try:
        artifacts.check_not_special(path, "model file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: model file not found; pass a run directory written by 'fmnist train'") from None
    except OSError as error:
        raise CheckpointError(f"{path}: model file cannot be read ({error.strerror})") from None
    if not data:
        raise CheckpointError(f"{path}: model file is empty; train again or restore it from a backup")

    if path.suffix == ".safetensors":
        try:
            state = load_safetensors_bytes(data)
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"{path}: model file is truncated or corrupt ({error}); train again or restore it from a backup"
            ) from None
    else:
        state = _read_torch_file(path)
    return clean_state_dict(state)


def load_weights_only(path: Path, file_kind: str, fix: str, rejected_fix: str) -> Any:
    """Load a ``torch.save`` file on the CPU with ``weights_only=True``, so no code in it runs.

    A file that contains other objects raises CheckpointError ending in ``rejected_fix``.
    A truncated or corrupt one raises CheckpointError naming ``file_kind`` and ending in ``fix``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, which would run the file's code.
        raise CheckpointError(
            f"{path}: refused to load, the file holds objects other than tensors (torch.load with "
            f"weights_only=True rejected it); {rejected_fix}"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: {file_kind} is truncated or corrupt ({first_line}); {fix}") from None


def _read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    loaded = load_weights_only(
        path,
        "model file",
        "train again or restore it from a backup",
        "only load models from sources you trust, and re-save them as safetensors",
    )
    if isinstance(loaded, dict) and "model" in loaded and isinstance(loaded["model"], dict):
        loaded = loaded["model"]  # a training checkpoint: take the model's state dict
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise CheckpointError(f"{path}: file does not hold a state dict (a mapping of names to tensors)")
    return loaded


def check_state_dict(state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise CheckpointError unless ``state`` has exactly the keys and shapes of the classifier."""
    artifacts.check_state_shapes({key: tuple(tensor.shape) for key, tensor in state.items()}, path)


# The dtypes whose values load_model can copy into the float32 model and check with numpy.
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def load_model(model_path: Path) -> tuple[nn.Sequential, dict[str, Any]]:
    """Load the model of a run directory (or weights file) on the CPU, in eval mode, with its metadata."""
    weights_path, metadata_path = artifacts.resolve_model_paths(model_path)
    metadata = artifacts.read_metadata(metadata_path)
    state = read_state_dict(weights_path)
    model = build_model(dropout=float(metadata.get("architecture", {}).get("dropout", 0.0)))
    check_state_dict(state, weights_path)
    for key in sorted(state):
        tensor = state[key]
        if tensor.dtype not in WEIGHT_DTYPES:
            raise CheckpointError(
                f"{weights_path}: tensor {key} has dtype {str(tensor.dtype).removeprefix('torch.')}, "
                f"expected floating-point weights; "
                f"train again or restore the file from a backup"
            )
    # numpy has no bfloat16, and float32 represents every bfloat16 value exactly.
    artifacts.check_finite_weights(
        {key: tensor.float() if tensor.dtype == torch.bfloat16 else tensor for key, tensor in state.items()},
        weights_path,
    )
    model.load_state_dict(state)
    model.eval()
    return model, metadata
