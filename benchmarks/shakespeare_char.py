"""Train recipes/shakespeare/char_gpt.yaml (nanoGPT's CPU shakespeare_char settings) and report
validation loss in nats/char and bits/char, and the wall time.

    TOKAR_DATA_DIR=../shared/data python benchmarks/shakespeare_char.py [overrides...]

Two validation figures: `val_loss_train_eval` is the training loop's estimate (240 windows of 64
characters spread evenly over the last 10% of the file, like nanoGPT's eval_iters=20 x batch 12),
`val_score_full` scores the whole validation split with a sliding window (every character
predicted from 32..63 characters of context) via Pipeline.score.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402

RECIPE = Path(__file__).parents[1] / "recipes" / "shakespeare" / "char_gpt.yaml"


def main() -> None:
    overrides = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline.from_recipe(RECIPE, overrides)
        start = time.perf_counter()
        result = pipe.train(Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - start
        t0 = time.perf_counter()
        score = pipe.score()
        score_s = time.perf_counter() - t0
        samples = pipe.sample(1, max_new_tokens=300, temperature=0.8, top_k=40)
    emit({
        "benchmark": "shakespeare_char",
        "recipe": str(RECIPE.relative_to(RECIPE.parents[2])),
        "overrides": overrides,
        "steps": result.steps,
        "val_loss_train_eval_nats_per_char": result.val.nats_per_token,
        "val_bits_per_char_train_eval": result.val.bits_per_unit,
        "val_score_full_nats_per_char": score.nats_per_token,
        "val_score_full_bits_per_char": score.bits_per_unit,
        "train_seconds": result.seconds,
        "wall_seconds_including_data_and_sampling": wall,
        "score_seconds": score_s,
        "train_tokens_per_second": result.tokens_per_second,
        "reference": "nanoGPT CPU shakespeare_char: about 1.88 nats/char val loss in about 3 min",
        "sample": samples[0],
    })


if __name__ == "__main__":
    main()
