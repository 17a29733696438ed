"""PixelDefend-style detection (Song et al. 2018): a PixelCNN of binarized MNIST flags test images
with k random pixel flips by their bits per pixel; detection rate at 5% false positives.

    TOKAR_DATA_DIR=../shared/data python benchmarks/pixeldefend.py --seconds 600

- model: a Gated PixelCNN on binarized MNIST (recipes/binarized_mnist/pixel_pixelcnn.yaml made
  smaller for a CPU budget: 5 layers of 16 channels, batch 16), trained for `--seconds`;
  thresholds calibrated on the 10,000 `valid` images (a uniform subsample of `--calibration`);
- clean inputs: a uniform subsample of `--n` of the 10,000 test images; perturbed inputs: the
  same images, each with k pixels (chosen uniformly, without repetition) flipped, k = 1, 5, 20;
- per k: the detection rate (TPR) at the threshold calibrated at 5% FPR, the false-positive
  rate measured on the clean test images at that threshold, AUROC, AUPRC and FPR at 95% TPR,
  for the likelihood score (PixelDefend's) and input complexity (PNG).
Random flips are not an adversarial attack: they show how few corrupted pixels the likelihood
notices, not what an adversary optimising against the detector would achieve.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.detection.evaluate import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "binarized_mnist" / "pixel_pixelcnn.yaml"
SMALL = ["data.validation=valid", "prior.n_layer=5", "prior.n_channels=16", "prior.n_out=32",
         "train.batch_size=16", "train.lr=2.0e-3", "train.min_lr=2.0e-4", "train.warmup_steps=50",
         "train.eval_batches=5", "train.eval_samples=0", "sample.n=4"]


def flip(images: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each image with k distinct pixels, chosen uniformly, flipped (0 <-> 1)."""
    rng = np.random.default_rng(seed)
    out = images.reshape(len(images), -1).copy()
    for row in out:
        where = rng.choice(row.size, size=k, replace=False)
        row[where] = 1 - row[where]
    return out.reshape(images.shape)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600, help="training wall time")
    p.add_argument("--n", type=int, default=1000, help="test images (uniform subsample)")
    p.add_argument("--calibration", type=int, default=1000, help="validation images calibrated on")
    p.add_argument("--keep", type=Path, help="keep (and reuse) the run here")
    args = p.parse_args()
    data_dir = Path(os.environ.get("TOKAR_DATA_DIR", "data"))
    test = np.load(data_dir / "binarized_mnist.npz")["test"].astype(np.uint8)
    keep = np.sort(np.random.default_rng(0).choice(len(test), size=min(args.n, len(test)), replace=False))
    clean = test[keep]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run, info = work / "binarized_mnist", {}
        if not (run / "prior").is_dir():
            steps = budget_overrides(RECIPE, args.seconds, work, SMALL)
            shutil.rmtree(run, ignore_errors=True)
            with Stopwatch() as sw:
                result = Pipeline.from_recipe(RECIPE, steps).train(run, progress=False)
            info = {"steps": result.steps, "seconds": round(result.seconds, 1), "cpu_share": sw.cpu_share,
                    "val_nats_per_image": result.val.bits_per_unit * 784 * np.log(2)}
        pipe = Pipeline.load(run)
        results: dict = {}
        for k in (1, 5, 20):
            with Stopwatch() as sw:
                report = evaluate(pipe, list(clean), list(flip(clean, k, seed=k)),
                                  methods=["likelihood", "complexity"], fpr=0.05,
                                  calibration_examples=args.calibration)
            r = report.to_dict()
            results[f"k={k}"] = {"detection_rate_at_5pct_fpr": r["tpr"], "measured_fpr": r["fpr"],
                                 "auroc": r["auroc"], "auprc": r["auprc"],
                                 "fpr_at_95_tpr": r["fpr_at_95_tpr"],
                                 "eval_seconds": round(sw.wall, 1), "cpu_share": sw.cpu_share}
        emit({"flips": results, "n_test": len(clean), "calibration_images": r["calibration_examples"],
              "budget_seconds": args.seconds, "run": info})


if __name__ == "__main__":
    main()
