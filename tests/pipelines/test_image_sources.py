import gzip
import struct

import numpy as np
import pytest

from pipelines.data.images import BinarizedMNISTSource, FashionMNISTSource
from plugins.errors import DataError
from tests.conftest import DATA_DIR


def test_binarized_mnist_splits_from_the_reference_npz():
    path = DATA_DIR / "binarized_mnist.npz"
    if not path.is_file():
        pytest.fail(f"reference data missing: {path}")
    splits = BinarizedMNISTSource(path=str(path), validation="test").load()
    assert len(splits["train"]) == 50000 and len(splits["validation"]) == 10000
    img = np.asarray(splits["validation"][0]["example"])
    assert img.shape == (28, 28) and set(np.unique(img)) <= {0, 1}


def write_idx(root, prefix, images, labels):
    with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28) + images.tobytes())
    with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.tobytes())


def test_fashion_mnist_reads_idx_files_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    write_idx(tmp_path, "train", train, np.arange(20, dtype=np.uint8) % 10)
    write_idx(tmp_path, "t10k", train[:5], np.arange(5, dtype=np.uint8))
    splits = FashionMNISTSource(path=str(tmp_path)).load()
    assert len(splits["train"]) == 20 and len(splits["validation"]) == 5
    assert np.array_equal(np.asarray(splits["train"][3]["example"]), train[3])
    assert splits["train"][13]["label"] == 3
    assert splits["validation"].features["label"].names[7] == "Sneaker"  # for --class Sneaker
    held = FashionMNISTSource(path=str(tmp_path), validation="split", val_fraction=0.25).load()
    assert len(held["validation"]) == 5


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        FashionMNISTSource(path=str(tmp_path)).load()
    with pytest.raises(DataError, match="binarized_mnist.npz"):
        BinarizedMNISTSource(path=str(tmp_path / "nope.npz")).load()
