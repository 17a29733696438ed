"""Binarized MNIST test NLL in nats per image after a CPU time budget (Gated PixelCNN).

    TOKAR_DATA_DIR=../shared/data python benchmarks/binarized_mnist.py [--seconds 1800]

Trains recipes/binarized_mnist/pixel_pixelcnn.yaml (max_steps sized for about 30 minutes on
2 cores, `max_seconds` as the cap), then scores all 10,000 test images exactly (Pipeline.score:
sum of log-likelihoods, in nats per image = nats per pixel x 784). The curve (validation nats
per image on 1,280 test images over training time) and a sample grid go to docs/.
Published: NADE 88.33, MADE 86.64, PixelCNN 81.30, PixelRNN 79.20.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.runs.samples import image_grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "binarized_mnist" / "pixel_pixelcnn.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1800)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline.from_recipe(RECIPE, [f"train.max_seconds={args.seconds}",
                                             "train.eval_samples=0"])
        with Stopwatch() as training:
            result = pipe.train(Path(tmp) / "run", progress=False)
        start = time.perf_counter()
        score = pipe.score()  # the official test set (data.validation: test)
        score_s = time.perf_counter() - start
        rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        curve = [(r["elapsed_s"], r["loss"] * 784) for r in rows if r["split"] == "val"]
        start = time.perf_counter()
        samples = pipe.sample(16, seed=0)
        sample_s = time.perf_counter() - start
    image_grid(samples, cols=8).save(ROOT / "docs" / "binarized_mnist_pixelcnn.png")
    emit({
        "benchmark": "binarized_mnist", "recipe": "recipes/binarized_mnist/pixel_pixelcnn.yaml",
        "budget_seconds": args.seconds, "steps": result.steps, "train_seconds": result.seconds,
        "train_wall_seconds": training.wall, "threads": torch.get_num_threads(),
        "train_cpu_share": training.cpu_share, "parameters": pipe.prior.num_parameters(),
        "test_images": score.examples,
        "test_nll_nats_per_image": score.nats_per_token * 784,
        "test_bits_per_pixel": score.bits_per_unit,
        "score_seconds": score_s,
        "sample_16_seconds_naive_step": sample_s,
        "curve_seconds_vs_val_nats_per_image": curve,
        "target": "<= 80.0 nats within 30 minutes on 2 cores",
        "published": {"NADE": 88.33, "MADE": 86.64, "PixelCNN": 81.30, "PixelRNN": 79.20},
    })


if __name__ == "__main__":
    main()
