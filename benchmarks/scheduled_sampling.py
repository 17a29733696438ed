"""Scheduled sampling on Tiny Shakespeare: the char LSTM with and without, at one CPU budget.

    TOKAR_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/scheduled_sampling.py \
        [--seconds 120] [--variants teacher sequential two_pass] [--max-p 0.25]

Each variant trains recipes/shakespeare/char_lstm.yaml for the same budget of CPU seconds
(benchmarks/_common.cpu_clock; steps calibrated per variant, warmup + cosine sized to it):
`teacher` is plain teacher forcing, `sequential` and `two_pass` add
`train.scheduled_sampling: {schedule: linear, max_p, ramp_steps: half the run}` in that form.
Then, per variant:
- validation NLL in nats per character on the whole validation split (Pipeline.score: the last
  10% of the file, 111,540 characters, state carried through);
- a sample-quality proxy: 8 samples of 600 characters at temperature 1 (seeded), cut into words
  (letters and apostrophes), and the share of those words that occur in the training text
  (the first 90% of the file), overall and for words of 4 letters or more.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, cpu, cpu_clock, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "shakespeare" / "char_lstm.yaml"
WORD = re.compile(r"[A-Za-z']+")


def steps_per_cpu_second(overrides: list[str], tmp: Path) -> float:
    run = tmp / f"calibrate-{len(list(tmp.iterdir()))}"
    with cpu_clock():
        Pipeline.from_recipe(RECIPE, [*overrides, "train.max_steps=30", "train.log_every=5",
                                      "train.eval_every=1000", "train.eval_samples=0",
                                      "train.max_seconds=null", "sample.n=1"]).train(run, progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    return (train[-1]["step"] - train[0]["step"]) / (train[-1]["elapsed_s"] - train[0]["elapsed_s"])


def word_hits(samples: list[str], vocabulary: set[str]) -> dict[str, float]:
    words = [w.lower().strip("'") for s in samples for w in WORD.findall(s)]
    words = [w for w in words if w]
    long = [w for w in words if len(w) >= 4]
    share = lambda ws: sum(w in vocabulary for w in ws) / max(1, len(ws))  # noqa: E731
    return {"words": len(words), "in_training_text": share(words),
            "long_words": len(long), "long_in_training_text": share(long)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--variants", nargs="+", default=["teacher", "sequential", "two_pass"])
    ap.add_argument("--max-p", type=float, default=0.25)
    args = ap.parse_args()
    text = (Path(Pipeline.from_recipe(RECIPE).recipe.data.config.path)).read_text()
    vocabulary = {w.lower().strip("'") for w in WORD.findall(text[: int(len(text) * 0.9)])}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            base = [] if variant == "teacher" else [
                f"train.scheduled_sampling={{schedule: linear, max_p: {args.max_p}, form: {variant}}}"]
            sps = steps_per_cpu_second(base, Path(tmp))
            steps = max(10, int(sps * args.seconds))
            overrides = [*base, f"train.max_steps={steps}", f"train.max_seconds={args.seconds}",
                         f"train.eval_every={max(1, steps // 4)}", "train.eval_samples=0", "sample.n=1"]
            if variant != "teacher":  # p climbs to max_p over the first half of the run
                overrides.append(f"train.scheduled_sampling.ramp_steps={max(1, steps // 2)}")
            pipe = Pipeline.from_recipe(RECIPE, overrides)
            with cpu_clock(), Stopwatch() as training:
                result = pipe.train(Path(tmp) / variant, progress=False)
            score = pipe.score()
            samples = pipe.sample(8, max_new_tokens=600, temperature=1.0, seed=0)
            results[variant] = {
                "steps": result.steps, "calibrated_steps_per_cpu_second": sps,
                "train_cpu_seconds": result.seconds, "train_wall_seconds": round(training.wall, 1),
                "cpu_share": training.cpu_share,
                "val_nats_per_char": score.nats_per_token, "val_bits_per_char": score.bits_per_unit,
                "sample_words": word_hits(samples, vocabulary), "sample_head": samples[0][:200],
            }
    emit({"benchmark": "scheduled_sampling", "recipe": "recipes/shakespeare/char_lstm.yaml",
          "budget_cpu_seconds": args.seconds, "max_p": args.max_p, "schedule": "linear, half the run",
          "results": results, "threads": torch.get_num_threads(), "cpu": cpu()})


if __name__ == "__main__":
    main()
