"""Does the optimizer explain the slow binarized MNIST PixelCNN? A short side-by-side: the recipe's
AdamW settings (betas 0.9/0.95, gradient clipping at 1.0, lr 1e-3) against betas 0.9/0.999 with
no clipping, and the same at lr 2e-3, each for the same short budget.

    TOKAR_DATA_DIR=../shared/data python benchmarks/pixelcnn_optimizer_ab.py [--seconds 110]

Reports validation nats per image (1,280 test images) at the midpoint and at the end of each run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "binarized_mnist" / "pixel_pixelcnn.yaml"
VARIANTS = {
    "recipe (betas 0.9/0.95, clip 1.0, lr 1e-3)": [],
    "betas 0.9/0.999, no clip": ["train.betas=[0.9,0.999]", "train.grad_clip=null"],
    "betas 0.9/0.999, no clip, lr 2e-3": ["train.betas=[0.9,0.999]", "train.grad_clip=null",
                                          "train.lr=2.0e-3", "train.min_lr=2.0e-4"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=110)
    ap.add_argument("--steps", type=int, default=190, help="max_steps (the cosine schedule's length)")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, overrides) in enumerate(VARIANTS.items()):
            pipe = Pipeline.from_recipe(RECIPE, [*overrides, f"train.max_seconds={args.seconds}",
                                                 f"train.max_steps={args.steps}",
                                                 f"train.eval_every={args.steps // 2}",
                                                 "train.eval_samples=0"])
            run = Path(tmp) / f"run{i}"
            pipe.train(run, progress=False)
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            results[name] = [(r["step"], round(r["loss"] * 784, 2)) for r in rows if r["split"] == "val"]
            print(name, results[name], file=sys.stderr)
    emit({"benchmark": "pixelcnn_optimizer_ab", "recipe": "recipes/binarized_mnist/pixel_pixelcnn.yaml",
          "seconds_each": args.seconds, "val_nats_per_image_at_steps": results})


if __name__ == "__main__":
    main()
