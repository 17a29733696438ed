"""Fashion-MNIST (in-distribution) vs any set of 28x28 grayscale images (out): AUROC, AUPRC and
FPR at 95% TPR of the four detectors of pipelines/detection/detectors.py, the pair of Nalisnick et al. 2019.

    TOKAR_DATA_DIR=../shared/data python benchmarks/make_ood_sets.py --out /tmp/ood
    python benchmarks/ood_images.py --ood /tmp/ood/binarized_mnist_255.npz --seconds 900 --keep /tmp/oodruns

What runs:
- a Gated PixelCNN on 8-bit Fashion-MNIST (unconditional, discretized logistic mixture head),
  trained for `--seconds` of wall time on this machine's CPUs (max_steps from a timed
  calibration, so warmup + cosine end with the budget; benchmarks/_common.py);
- its background model for the likelihood ratio (Ren et al. 2019): the same recipe with
  data.augment.mutate=0.2 and weight decay (L2) 0.1, the same budget;
- thresholds and p-values calibrated on 1,200 training images held out from both (data.
  validation=split, val_fraction=0.02); in-distribution test inputs: a uniform subsample of
  `--n-test` of the official 10,000 test images; OOD inputs: a uniform subsample of `--n-test`
  of `--ood` (an .npz holding one uint8 (N, 28, 28) array, or a folder of 28x28 grayscale images);
- typicality on groups of 5 inputs; complexity with PNG.
`--keep DIR` keeps the two runs and reuses them when they are already there (other OOD sets,
no retraining); `--score-10k` also times scoring all 10,000 test images (likelihood: one model).
Prints JSON: auroc / auprc / fpr_at_95_tpr per method, the detection rate at the calibrated 5%
threshold, both models' validation bits per subpixel, training steps and the CPU share.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.data.images import FashionMNISTSource  # noqa: E402
from pipelines.detection.data import read_data  # noqa: E402
from pipelines.detection.evaluate import evaluate, plot_histograms  # noqa: E402

RECIPE = {
    "data": {"source": "fashion_mnist", "validation": "split", "val_fraction": 0.02},
    "tokenizer": {"name": "pixel", "levels": 256},
    "prior": {"name": "pixelcnn", "n_layer": 5, "n_channels": 16, "first_kernel_size": 7,
              "kernel_size": 3, "n_out": 32, "n_classes": 0,
              "head": {"name": "logistic_mixture", "n_mixtures": 5}},
    "train": {"batch_size": 16, "lr": 2.0e-3, "min_lr": 2.0e-4, "warmup_steps": 50,
              "weight_decay": 0.0, "eval_batches": 5, "eval_samples": 0, "log_every": 10},
    "sample": {"n": 4},
}
BACKGROUND = ["data.augment.mutate=0.2", "train.weight_decay=0.1"]


def train(name: str, overrides: list[str], keep: Path, steps: list[str]) -> tuple[Path, dict]:
    """Train (or reuse, when KEEP already holds it) one of the two runs."""
    run = keep / name
    if (run / "prior").is_dir():
        import yaml

        levels = yaml.safe_load((run / "recipe.yaml").read_text())["tokenizer"]["levels"]
        if levels != RECIPE["tokenizer"]["levels"]:
            sys.exit(f"{run} models {levels} pixel levels, not {RECIPE['tokenizer']['levels']}: "
                     "pass another --keep folder")
        print(f"reusing {run}", file=sys.stderr)
        return run, json.loads((run / "run.json").read_text()).get("result", {})
    with Stopwatch() as sw:
        result = Pipeline.from_recipe(RECIPE, [*overrides, *steps]).train(run, progress=False)
    return run, {"steps": result.steps, "seconds": round(result.seconds, 1), "cpu_share": sw.cpu_share,
                 "val_bits_per_unit": result.val.bits_per_unit if result.val else None}


def budget(seconds: float, keep: Path) -> list[str]:
    """max_steps for `seconds` from 40 timed steps of the recipe (as benchmarks/_common.py)."""
    import yaml

    from pipelines.io.atomic import write_text_atomically

    recipe = keep / "fashion_ood.yaml"
    write_text_atomically(recipe, yaml.safe_dump(RECIPE))
    return budget_overrides(recipe, seconds, keep)


def subsample(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.arange(n_total) if n >= n_total else \
        np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ood", required=True, help=".npz of uint8 (N, 28, 28) or a folder of images")
    p.add_argument("--seconds", type=float, default=900, help="training wall time per model")
    p.add_argument("--keep", type=Path, help="keep (and reuse) the two runs here")
    p.add_argument("--n-test", type=int, default=2000, help="uniform subsample of each test set")
    p.add_argument("--calibration", type=int, default=1000, help="validation images calibrated on")
    p.add_argument("--score-10k", action="store_true", help="also time scoring 10,000 test images")
    p.add_argument("--plot", type=Path, help="histogram PNG (default: KEEP/histogram.png)")
    p.add_argument("--levels", type=int, default=256, help="pixel levels the model sees (the "
                   "pixel tokenizer quantizes the 8-bit images; 256 keeps them exact)")
    args = p.parse_args()
    RECIPE["tokenizer"]["levels"] = args.levels
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        need = not ((keep / "fashion" / "prior").is_dir() and (keep / "background" / "prior").is_dir())
        steps = budget(args.seconds, keep) if need else []
        model, model_info = train("fashion", [], keep, steps)
        background, bg_info = train("background", BACKGROUND, keep, steps)

        pipe = Pipeline.load(model)
        test = FashionMNISTSource._read(Path(pipe.recipe.data.config.path), "t10k")[0]
        keep_in = subsample(len(test), args.n_test, 0)
        in_examples, in_ids = [test[i] for i in keep_in], [f"fashion_test/{i}" for i in keep_in]
        ood_ids, ood_examples = read_data(args.ood, pipe.tokenizer)
        keep_ood = subsample(len(ood_examples), args.n_test, 1)
        ood_ids, ood_examples = [ood_ids[i] for i in keep_ood], [ood_examples[i] for i in keep_ood]
        with Stopwatch() as sw:
            report = evaluate(pipe, in_examples, ood_examples, in_ids=in_ids, ood_ids=ood_ids,
                              background=background, fpr=0.05, group_size=5,
                              calibration_examples=args.calibration)
        plot = plot_histograms(report, args.plot or keep / "histogram.png", "Fashion-MNIST test",
                               Path(args.ood).name)
        r = report.to_dict()
        result = {
            "auroc": r["auroc"], "auprc": r["auprc"], "fpr_at_95_tpr": r["fpr_at_95_tpr"],
            "detection_rate_at_calibrated_5pct_fpr": r["tpr"], "measured_fpr_on_test": r["fpr"],
            "n": r["n"], "calibration_examples": r["calibration_examples"],
            "ood": str(args.ood), "histogram": str(plot) if args.keep or args.plot else None,
            "models": {"fashion": model_info, "background": bg_info},
            "budget_seconds_per_model": args.seconds,
            "eval": {"seconds": round(sw.wall, 1), "cpu_share": sw.cpu_share},
        }
        if args.score_10k:
            examples = [test[i] for i in range(len(test))]
            with Stopwatch() as sw:
                t0 = time.perf_counter()
                pipe.score(examples)
                seconds = time.perf_counter() - t0
            result["score_10k"] = {"images": len(examples), "seconds": round(seconds, 1),
                                   "images_per_s": round(len(examples) / seconds, 1),
                                   "cpu_share": sw.cpu_share}
        emit(result)


if __name__ == "__main__":
    main()
