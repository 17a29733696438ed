"""Out-of-distribution image sets for benchmarks/ood_images.py, from data at hand (no download):

- `binarized_mnist_255.npz`: the 10,000 binarized MNIST test digits (Larochelle & Murray's fixed
  binarization, ${data_dir}/binarized_mnist.npz) scaled to 0/255, uint8 (10000, 28, 28);
- `sklearn_digits_28.npz`: scikit-learn's 1,797 8x8 digits (values 0..16) scaled to 0..255 and
  resized to 28x28 (bilinear), uint8 (1797, 28, 28).

    TOKAR_DATA_DIR=../shared/data python benchmarks/make_ood_sets.py --out /tmp/ood
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the .npz files")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(os.environ.get("TOKAR_DATA_DIR", "data"))
    mnist = np.load(data_dir / "binarized_mnist.npz")["test"]
    np.savez_compressed(args.out / "binarized_mnist_255.npz", images=(mnist * 255).astype(np.uint8))

    from sklearn.datasets import load_digits

    digits = np.rint(load_digits().images * (255 / 16)).astype(np.uint8)
    resized = np.stack([np.asarray(Image.fromarray(d).resize((28, 28), Image.BILINEAR)) for d in digits])
    np.savez_compressed(args.out / "sklearn_digits_28.npz", images=resized)
    print(json.dumps({"binarized_mnist_255": [int(s) for s in mnist.shape],
                      "sklearn_digits_28": [int(s) for s in resized.shape], "out": str(args.out)}))


if __name__ == "__main__":
    main()
