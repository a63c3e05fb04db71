import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_dataset  # noqa: E402

# $FMNIST_DATA_DIR as the command line reads it, else the shared folder beside the checkout.
# Read at import, because the autouse fixture below removes the variable from each test.
REAL_DATA_DIR = Path(
    os.environ.get("FMNIST_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A small synthetic dataset in gzip IDX form, in a fresh directory."""
    return make_dataset(tmp_path / "data")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the user's cache and data directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)


@pytest.fixture
def real_data_dir() -> Path:
    """The real Fashion-MNIST files, or a skip when this checkout has no shared data."""
    if not all((REAL_DATA_DIR / name).exists() for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")):
        pytest.skip(f"real data not found in {REAL_DATA_DIR}")
    return REAL_DATA_DIR


@pytest.fixture(autouse=True)
def reset_package_logger():
    """Undo the handlers that fmnist.cli.main installs, so each test starts from a clean logger."""
    import logging

    package_logger = logging.getLogger("fmnist")
    yield
    package_logger.handlers.clear()
    package_logger.setLevel(logging.NOTSET)
    package_logger.propagate = True


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked gpu when no CUDA device is present."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
