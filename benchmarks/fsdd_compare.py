"""FSDD, 8 kHz mu-law: WaveNet vs LSTM at the same CPU time budget, both conditioned on the
digit; FSDD test bits per audio sample (mu-law codes).

    TOKAR_DATA_DIR=../shared/data python benchmarks/fsdd_compare.py --seconds 600

Each of recipes/fsdd/mulaw_{wavenet,lstm}.yaml is first timed for 40 steps; its `max_steps` is
then set so the warmup + cosine schedule ends with the `--seconds` budget (max_seconds caps
it). Then the official test
split (index 0-4, 300 recordings; `--test-limit` scores only the first N) is scored exactly by
Pipeline.score: each recording whole, through init_state/step, with its digit label.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["mulaw_wavenet", "mulaw_lstm"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600, help="training wall time per recipe")
    p.add_argument("--test-limit", type=int, default=None, help="score only the first N test files")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RECIPES:
            recipe = ROOT / "recipes" / "fsdd" / f"{name}.yaml"
            overrides = budget_overrides(recipe, args.seconds, Path(tmp))
            pipe = Pipeline.from_recipe(recipe, overrides)
            with Stopwatch() as training:
                trained = pipe.train(Path(tmp) / name, progress=False)
            test = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]
            test = test.select(range(min(args.test_limit or len(test), len(test))))
            score = pipe.score(list(test["example"]), labels=list(test["label"]))
            results[name] = {"overrides": overrides, "steps": trained.steps,
                             "train_seconds": trained.seconds, "train_cpu_share": training.cpu_share,
                             "parameters": pipe.prior.num_parameters(),
                             "test_bits_per_sample": score.bits_per_unit,
                             "test_recordings": score.examples, "test_samples": score.units}
    emit({"benchmark": "fsdd_compare", "seconds_each": args.seconds, "data": "FSDD 8 kHz mu-law 256",
          "results": results, "wavenet_minus_lstm_bits": results["mulaw_wavenet"]["test_bits_per_sample"]
          - results["mulaw_lstm"]["test_bits_per_sample"]})


if __name__ == "__main__":
    main()
