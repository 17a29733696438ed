"""FSDD, 8 kHz mu-law: WaveNet vs LSTM at the same CPU time budget, both conditioned on the
digit; FSDD test bits per audio sample (mu-law codes).

    TOKAR_DATA_DIR=../shared/data python benchmarks/fsdd_compare.py --seconds 600

Each of recipes/fsdd/mulaw_{wavenet,lstm}.yaml trains for `--seconds` of wall time
(train.max_seconds; the recipe's warmup + cosine schedule is cut there), then the official test
split (index 0-4, 300 recordings; `--test-limit` scores only the first N) is scored exactly by
Pipeline.score: each recording whole, through init_state/step, with its digit label.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["mulaw_wavenet", "mulaw_lstm"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600, help="training wall time per recipe")
    p.add_argument("--test-limit", type=int, default=None, help="score only the first N test files")
    p.add_argument("--eval-every", type=int, default=500)
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RECIPES:
            pipe = Pipeline.from_recipe(ROOT / "recipes" / "fsdd" / f"{name}.yaml", [
                f"train.max_seconds={args.seconds}", f"train.eval_every={args.eval_every}",
                "train.eval_samples=0", "sample.n=1", "sample.max_new_tokens=8"])
            trained = pipe.train(Path(tmp) / name, progress=False)
            test = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]
            test = test.select(range(min(args.test_limit or len(test), len(test))))
            score = pipe.score(list(test["example"]), labels=list(test["label"]))
            results[name] = {"steps": trained.steps, "train_seconds": trained.seconds,
                             "parameters": pipe.prior.num_parameters(),
                             "test_bits_per_sample": score.bits_per_unit,
                             "test_recordings": score.examples, "test_samples": score.units}
    emit({"benchmark": "fsdd_compare", "seconds_each": args.seconds, "data": "FSDD 8 kHz mu-law 256",
          "results": results, "wavenet_minus_lstm_bits": results["mulaw_wavenet"]["test_bits_per_sample"]
          - results["mulaw_lstm"]["test_bits_per_sample"]})


if __name__ == "__main__":
    main()
