"""The Fashion-MNIST release, declared as data: files, digests, mirrors, classes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataFile:
    """One file of the official release and the MD5 digest its authors publish."""

    name: str
    md5: str
    kind: str  # "images" or "labels"
    split: str  # "train" or "test"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset in the IDX format of MNIST: its files, mirrors and class names."""

    name: str
    files: tuple[DataFile, ...]
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]
    image_shape: tuple[int, int]

    def file(self, split: str, kind: str) -> DataFile:
        """Return the file that holds the ``kind`` ("images"/"labels") of ``split``."""
        for data_file in self.files:
            if data_file.split == split and data_file.kind == kind:
                return data_file
        raise KeyError(f"{self.name} has no {kind} file for split {split!r}")


FASHION_MNIST = DatasetSpec(
    name="Fashion-MNIST",
    files=(
        DataFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "images", "train"),
        DataFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", "labels", "train"),
        DataFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", "images", "test"),
        DataFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", "labels", "test"),
    ),
    # Tried in order; each URL is a prefix to which a file name is appended.
    mirrors=(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    image_shape=(28, 28),
)
