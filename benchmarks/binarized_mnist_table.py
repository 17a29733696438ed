"""One binarized-MNIST table: test NLL in nats per image on all 10,000 test images, per model, at
a CPU budget and at twice it.

    TOKAR_DATA_DIR=../shared/data OMP_NUM_THREADS=1 \
        python benchmarks/binarized_mnist_table.py MODEL [--seconds 120 240] [--set key=value ...]
        [--order NAME] [--tag TAG]

MODEL is a recipe of recipes/binarized_mnist/ (fvsbn, nade, made, rnn, lstm, gpt, pixel_pixelcnn).
Budgets are CPU seconds of the training process (benchmarks/_common.cpu_clock): the machine is
shared, so a wall-clock budget would measure the neighbours. Each budget is its own run: the
number of steps is calibrated once (steps per CPU second over 20 steps after 5 of warm-up) and
the recipe's warmup + cosine schedule is sized to the budget, `train.max_seconds` being the hard
cap. Every run is then scored exactly on the whole test set (Pipeline.score: the 10,000 images of
the recipe's validation split, `data.validation: test`). MADE also reports the ensemble over its
masks (log of the mean probability of each test image under every mask) and each mask alone.
The validation curve (three points, a fixed-seed uniform sample of about 500 test images: the
evaluations count against the budget) is in the JSON too.
`--order` trains the prior on another order of the pixels (pipelines/data/order.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, cpu, cpu_clock, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.data.sources import tokenize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {"fvsbn": 97.45, "nade": 88.33, "made": "88.04 (1 layer, 32 masks) / 86.64 (2 layers)",
             "pixel_pixelcnn": 81.30, "pixelrnn": 79.20}
PIXELS = 784


def calibrate(recipe: Path, overrides: list[str], tmp: Path) -> float:
    """Training steps per CPU second of the recipe (20 steps after 5 of warm-up)."""
    run = tmp / "calibrate"
    with cpu_clock():
        Pipeline.from_recipe(recipe, [*overrides, "train.max_steps=25", "train.log_every=5",
                                      "train.eval_every=1000", "train.eval_samples=0",
                                      "train.max_seconds=null", "sample.n=1"]).train(run, progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    return (train[-1]["step"] - train[0]["step"]) / (train[-1]["elapsed_s"] - train[0]["elapsed_s"])


@torch.no_grad()
def made_ensembles(pipe: Pipeline) -> dict:
    """MADE on all test images: each mask alone and the ensemble of all masks, nats per image."""
    splits = pipe.recipe.data.cls(pipe.recipe.data.config).load()
    rows = tokenize({"validation": splits["validation"]}, pipe.ordered_tokenizer)["validation"].tokens
    x = torch.from_numpy(rows)
    per_mask = torch.cat([pipe.prior.mask_log_probs(x[i : i + 500]) for i in range(0, len(x), 500)], 1)
    n = per_mask.size(0)
    ensemble = (torch.logsumexp(per_mask, 0) - math.log(n)).mean().item()
    singles = (-per_mask.mean(1)).tolist()
    return {"masks": n, "ensemble_nll": -ensemble, "mask0_nll": singles[0],
            "mean_single_mask_nll": sum(singles) / n, "best_single_mask_nll": min(singles)}


def run_budget(recipe: Path, overrides: list[str], seconds: float, steps_per_s: float, tmp: Path) -> dict:
    steps = max(10, int(steps_per_s * seconds))
    batch = Pipeline.from_recipe(recipe, overrides).recipe.train.batch_size
    # three evaluations of ~500 images: they count against the budget, so keep them small
    pipe = Pipeline.from_recipe(recipe, [*overrides, f"train.max_steps={steps}",
                                         f"train.max_seconds={seconds}",
                                         f"train.eval_every={max(1, steps // 3)}",
                                         f"train.eval_batches={math.ceil(500 / batch)}",
                                         "train.warmup_steps=" + str(min(100, steps // 10)),
                                         "train.eval_samples=0", "sample.n=4"])
    run = tmp / f"run-{int(seconds)}"
    with cpu_clock(), Stopwatch() as training:
        result = pipe.train(run, progress=False)
    with Stopwatch() as scoring:
        score = pipe.score()  # all 10,000 test images
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    out = {
        "budget_cpu_seconds": seconds, "planned_steps": steps, "steps": result.steps,
        "train_cpu_seconds": result.seconds, "train_wall_seconds": round(training.wall, 1),
        "cpu_share": training.cpu_share, "test_images": score.examples,
        "test_nll_nats_per_image": score.nats_per_token * PIXELS,
        "score_wall_seconds": round(scoring.wall, 1), "parameters": pipe.prior.num_parameters(),
        "curve_cpu_seconds_vs_val_nats_per_image": [(round(r["elapsed_s"]), round(r["loss"] * PIXELS, 2))
                                                    for r in rows if r["split"] == "val"],
    }
    if pipe.recipe.prior.name == "made":
        out["made"] = made_ensembles(pipe)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, nargs="+", default=[120.0, 240.0])
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides")
    ap.add_argument("--order", default=None)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()
    recipe = ROOT / "recipes" / "binarized_mnist" / f"{args.model}.yaml"
    overrides = list(args.set) + ([f"order.name={args.order}"] if args.order else [])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sps = calibrate(recipe, overrides, Path(tmp))
        budgets = [run_budget(recipe, overrides, s, sps, Path(tmp)) for s in args.seconds]
    emit({
        "benchmark": "binarized_mnist_table", "model": args.model, "tag": args.tag,
        "recipe": f"recipes/binarized_mnist/{args.model}.yaml", "overrides": overrides,
        "parameters": budgets[0]["parameters"], "calibrated_steps_per_cpu_second": sps,
        "budgets": budgets,
        "published": PUBLISHED.get(args.model), "threads": torch.get_num_threads(),
        "total_wall_seconds": round(time.perf_counter() - start), "cpu": cpu(),
    })


if __name__ == "__main__":
    main()
