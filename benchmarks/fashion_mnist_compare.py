"""Fashion-MNIST, 8-bit (256 levels): test bits per dimension of the Gated PixelCNN (softmax
and discretized logistic mixture heads) vs an Image-GPT style pixel GPT, at the same CPU budget.

    python benchmarks/fashion_mnist_compare.py [--seconds 300] [--test-images 10000]

Needs `apt-get install dataset-fashion-mnist`. Each model is first timed for 40 steps; its
`max_steps` is then set to fill the budget and `max_seconds` caps it. All three are
class-conditional on the 10 labels. Scores: exact log-likelihood of the official test images
(the first --test-images of them), in bits per subpixel. A sample grid of each model (one column
per class) and the time to sample 16 images with cached decoding go to docs/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.runs.samples import image_grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # name: (recipe, overrides)
    "pixelcnn_softmax": ("pixel_pixelcnn", []),
    "pixelcnn_logistic_mixture": ("pixel_pixelcnn", ["prior.head=logistic_mixture"]),
    "pixel_gpt": ("pixel_gpt", []),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--test-images", type=int, default=10_000)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            recipe_name, extra = MODELS[name]
            recipe = ROOT / "recipes" / "fashion_mnist" / f"{recipe_name}.yaml"
            overrides = budget_overrides(recipe, args.seconds, tmp, extra)
            pipe = Pipeline.from_recipe(recipe, overrides)
            with Stopwatch() as training:
                result = pipe.train(tmp / name, progress=False)
            test = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]
            test = test.select(range(min(args.test_images, len(test))))
            start = time.perf_counter()
            score = pipe.score(list(test["example"]), labels=list(test["label"]))
            score_s = time.perf_counter() - start
            start = time.perf_counter()
            images = pipe.sample(16, seed=0)
            sample_s = time.perf_counter() - start
            image_grid(pipe.sample(20, seed=1), cols=10).save(ROOT / "docs" / f"fashion_mnist_{name}.png")
            rows = [json.loads(x) for x in (tmp / name / "metrics.jsonl").read_text().splitlines()]
            results[name] = {
                "recipe": f"recipes/fashion_mnist/{recipe_name}.yaml", "overrides": overrides,
                "parameters": pipe.prior.num_parameters(), "steps": result.steps,
                "train_seconds": result.seconds, "train_cpu_share": training.cpu_share,
                "test_images": score.examples, "test_bits_per_dim": score.bits_per_unit,
                "test_bits_per_image": score.bits_per_unit * 784, "score_seconds": score_s,
                "sample_16_seconds": sample_s, "sampled": len(images),
                "curve_seconds_vs_val_bits_per_dim": [
                    (r["elapsed_s"], r["loss"] / 0.6931471805599453) for r in rows if r["split"] == "val"],
            }
            print(f"{name}: {score.bits_per_unit:.4f} bits/dim after {result.steps} steps",
                  file=sys.stderr)
    emit({"benchmark": "fashion_mnist_compare", "budget_seconds_each": args.seconds,
          "results": results})


if __name__ == "__main__":
    main()
