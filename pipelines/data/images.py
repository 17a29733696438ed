"""Image data sets that Hugging Face `datasets` cannot read directly, as sources.

- `binarized_mnist`: the fixed binarization of MNIST (Larochelle & Murray 2011) used by NADE,
  MADE, PixelCNN and PixelRNN, from an `.npz` with keys train/valid/test of (N, 28, 28) {0, 1}.
- `fashion_mnist`: Fashion-MNIST (Xiao et al. 2017) from its gzipped IDX files, as Debian's
  `dataset-fashion-mnist` package installs them (/usr/share/datasets/fashion-mnist), with labels.

Both give the usual splits "train" and "validation" (column "example", plus "label"); which
held-out set serves as validation is a setting, so the standard test set can be scored.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
from pydantic import Field

from pipelines.data.sources import Source, SourceConfig
from pipelines.io.safe import check_regular_file
from plugins.errors import DataError


class BinarizedMNISTConfig(SourceConfig):
    path: str = Field(description="the .npz file, e.g. ${data_dir}/binarized_mnist.npz")
    validation: Literal["valid", "test"] = Field("valid", description="which held-out set")


class BinarizedMNISTSource(Source):
    name = "binarized_mnist"
    Config = BinarizedMNISTConfig
    modality = "image"

    def load(self) -> datasets.DatasetDict:
        path = Path(self.config.path)
        if not path.exists():
            raise DataError(f"binarized_mnist source: {path} not found; set data.path (the "
                            "reference copy is ${data_dir}/binarized_mnist.npz).")
        check_regular_file(path, "binarized_mnist source: data file")
        try:
            arrays = np.load(path)
            train, held = arrays["train"], arrays[self.config.validation]
        except (KeyError, ValueError, OSError) as exc:
            raise DataError(f"binarized_mnist source: {path} is not the expected .npz with keys "
                            f"train/valid/test ({exc}).") from exc
        return datasets.DatasetDict(train=_images(train), validation=_images(held))


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


class FashionMNISTConfig(SourceConfig):
    path: str = Field("/usr/share/datasets/fashion-mnist", description="folder of the IDX files")
    validation: Literal["test", "split"] = Field(
        "test", description="the official 10,000 test images, or val_fraction of train")
    train_examples: int | None = Field(None, ge=1, description="only the first N training images "
                                       "(quick runs and benchmarks with a small budget)")


class FashionMNISTSource(Source):
    name = "fashion_mnist"
    Config = FashionMNISTConfig
    modality = "image"

    def load(self) -> datasets.DatasetDict:
        root = Path(self.config.path)
        images, labels = self._read(root, "train")
        n = self.config.train_examples
        train = _images(images[:n], labels[:n], names=FASHION_CLASSES)
        if self.config.validation == "split":
            return self._split(train)
        held = _images(*self._read(root, "t10k"), names=FASHION_CLASSES)
        return datasets.DatasetDict(train=train, validation=held)

    @staticmethod
    def _read(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
        for f in (images, labels):
            if not f.exists():
                raise DataError(f"fashion_mnist source: {f} not found. Install the data with "
                                "`apt-get install dataset-fashion-mnist`, or set data.path.")
            check_regular_file(f, "fashion_mnist source: data file")
        return _idx(images, header=16).reshape(-1, 28, 28), _idx(labels, header=8)


def _idx(path: Path, header: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint8, offset=header)
    except (OSError, EOFError, ValueError) as exc:  # not gzip, truncated, shorter than its header
        raise DataError(f"fashion_mnist source: {path} is not a gzipped IDX file or is truncated "
                        f"({exc}).") from exc


def _images(images: np.ndarray, labels: np.ndarray | None = None,
            names: list[str] | None = None) -> datasets.Dataset:
    columns = {"example": images.astype(np.uint8)}
    if labels is not None:
        columns["label"] = labels.astype(np.int64)
    data = datasets.Dataset.from_dict(columns)
    if names is not None:  # class names travel with the labels: `tokar sample --class Sneaker`
        data = data.cast_column("label", datasets.ClassLabel(names=names))
    return data
