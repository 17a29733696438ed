"""Two-stage (VQ codes + GPT) vs pixel-level (GPT on 784 pixels) generation on Fashion-MNIST.

    TOKAR_DATA_DIR=../shared/data python benchmarks/fashion_mnist_two_stage.py [--seconds 600]

Needs Debian's dataset-fashion-mnist package. `--seconds` is the training budget of each model,
split evenly between the stages of a two-stage recipe (tokenizer.fit.max_seconds and
train.max_seconds) and spent wholly on the pixel-level prior: every model gets the same time.
For each two-stage recipe it reports, on the official test set:
- reconstruction PSNR and codebook usage (stage 1 alone: the quality ceiling of stage 2),
- the code rate: bits per image of the test codes under the prior (what the prior must learn),
  next to the pixel-level model's bits per image (a lossless rate: the two are not the same
  quantity, since the codes drop the detail the decoder cannot restore),
- the time to sample --samples (16) images (49 code steps + one decoder pass vs 784 pixel steps).
A sample grid of each two-stage recipe goes to --docs (default docs/).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.runs.samples import image_grid  # noqa: E402
from pipelines.training.stage1 import tokenizer_health  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TWO_STAGE = ["recipes/fashion_mnist/vqvae_gpt.yaml", "recipes/fashion_mnist/vqgan_gpt.yaml"]
PIXEL = "recipes/fashion_mnist/pixel_gpt.yaml"


def sample_seconds(pipe: Pipeline, n: int) -> tuple[float, list]:
    start = time.perf_counter()
    images = pipe.sample(n, seed=0)  # generate and decode to PIL images
    return time.perf_counter() - start, images


def run(recipe: str, overrides: list[str], tmp: Path, test_images: int) -> tuple[Pipeline, dict]:
    pipe = Pipeline.from_recipe(ROOT / recipe, overrides)
    start = time.perf_counter()
    result = pipe.train(tmp / Path(recipe).stem, progress=False)
    wall = time.perf_counter() - start
    test = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]  # validation: test
    test = test.select(range(min(test_images, len(test))))
    examples, labels = list(test["example"]), list(test["label"])
    score = pipe.score(examples, labels=labels)
    tokens_per_image = pipe.tokenizer.layout.length
    row = {"recipe": recipe, "steps": result.steps, "train_wall_seconds": round(wall, 1),
           "prior_parameters": pipe.prior.num_parameters(), "test_images": score.examples,
           "tokens_per_image": tokens_per_image,
           "bits_per_image": score.nats_per_token * tokens_per_image / math.log(2)}
    return pipe, {**row, "_examples": examples}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600, help="training budget of each model")
    ap.add_argument("--train-images", type=int, help="only the first N training images")
    ap.add_argument("--test-images", type=int, default=10_000, help="test images scored")
    ap.add_argument("--docs", default=str(ROOT / "docs"), help="where the sample grids go")
    ap.add_argument("--samples", type=int, default=16, help="images sampled for the timing")
    args = ap.parse_args()
    data = [f"data.train_examples={args.train_images}"] if args.train_images else []
    common = [*data, "train.eval_samples=0", "sample.n=1"]  # the run's own end-of-training sample
    half = args.seconds / 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pixel, pixel_row = run(PIXEL, [*common, f"train.max_seconds={args.seconds}"], Path(tmp),
                               args.test_images)
        pixel_row.pop("_examples")
        pixel_row["sample_seconds"], _ = sample_seconds(pixel, args.samples)
        for recipe in TWO_STAGE:
            pipe, row = run(recipe, [*common, f"tokenizer.fit.max_seconds={half}",
                                     f"train.max_seconds={half}"], Path(tmp), args.test_images)
            health = tokenizer_health(pipe.tokenizer, row.pop("_examples"))
            seconds, images = sample_seconds(pipe, args.samples)
            grid = Path(args.docs) / f"fashion_mnist_{Path(recipe).stem}.png"
            grid.parent.mkdir(parents=True, exist_ok=True)
            image_grid(images, cols=8).save(grid)
            rows.append({**row, "fit": pipe.tokenizer.fit_summary,
                         "test_psnr_db": health["psnr_db"], "test_codebook_usage": health["usage"],
                         "test_codes_used": health["codes_used"], "perplexity": health["perplexity"],
                         "sample_seconds": seconds,
                         "sampling_speedup_vs_pixel": pixel_row["sample_seconds"] / seconds,
                         "code_bits_per_image_vs_pixel_bits": row["bits_per_image"] /
                         pixel_row["bits_per_image"], "sample_grid": str(grid)})
    emit({"benchmark": "fashion_mnist_two_stage", "budget_seconds_per_model": args.seconds,
          "train_images": args.train_images or 60_000, "images_sampled": args.samples,
          "two_stage": rows, "pixel": pixel_row,
          "targets": {"sampling_speedup_vs_pixel": ">= 10", "test_psnr_db": "> 20"}})


if __name__ == "__main__":
    main()
