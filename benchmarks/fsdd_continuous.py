"""FSDD at 8 kHz: WaveNet on the raw float waveform with a mixture-of-Gaussians head vs WaveNet on
mu-law codes with the 256-way softmax, the same network and CPU time budget, both conditioned on
the digit. Both scored on FSDD's official test split (300 recordings) as bits per sample of the
16-bit audio, plus each model's own NLL, plus WAV samples.

    TOKAR_DATA_DIR=../shared/data python benchmarks/fsdd_continuous.py --seconds 300 --out DIR

How each model becomes a probability of the 16-bit recording:
- continuous (recipes/fsdd/real_wavenet_mog.yaml): the density of each sample times the 16-bit
  step 2/2^16 on [-1, 1] (the `waveform` tokenizer's quantization_step; its standardisation's
  scale is added back). A density times a bin width approximates the bin's mass; at this width
  (1/32768) the approximation error is far below the reported digits for smooth densities.
- mu-law (recipes/fsdd/mulaw_wavenet.yaml): P(code) spread uniformly over the 16-bit values that
  compand to that code: bits16 = bits(code) + log2(number of 16-bit values in the code's bin),
  an exact probability model of the 16-bit values.
Each model's own figure is reported too: nats per sample of its density (continuous) or of its
codes (mu-law). Budgets: each recipe is timed for 40 steps and `max_steps` set so that warmup +
cosine decay end with the budget (benchmarks/_common.py).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from tokenizers_ar.mulaw import mu_law_encode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"continuous_mog": "real_wavenet_mog", "mulaw_softmax": "mulaw_wavenet"}


def mulaw_bin_bits(mu: int) -> np.ndarray:
    """log2 of how many 16-bit values fall into each mu-law code's bin, (mu + 1,)."""
    codes = mu_law_encode(np.arange(-32768, 32768) / 32768.0, mu)
    return np.log2(np.bincount(codes, minlength=mu + 1).clip(min=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=300, help="training wall time per recipe")
    p.add_argument("--test-limit", type=int, default=None, help="a uniform subsample of N test files")
    p.add_argument("--out", type=Path, default=None, help="keep the runs and WAV samples here")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for label, name in RECIPES.items():
            recipe = ROOT / "recipes" / "fsdd" / f"{name}.yaml"
            overrides = budget_overrides(recipe, args.seconds, Path(tmp))
            pipe = Pipeline.from_recipe(recipe, overrides)
            with Stopwatch() as training:
                trained = pipe.train(out / label, progress=False)
            test = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]
            if args.test_limit:  # uniform over the split, never a prefix
                test = test.select(np.linspace(0, len(test) - 1, args.test_limit).astype(int).tolist())
            files, labels = list(test["example"]), list(test["label"])
            score = pipe.score(files, labels=labels, ids=files)
            row = {"overrides": overrides, "steps": trained.steps, "train_seconds": trained.seconds,
                   "train_cpu_share": training.cpu_share, "parameters": pipe.prior.num_parameters(),
                   "test_recordings": score.examples, "test_samples": score.units,
                   "model_nats_per_sample": score.nats_per_token}
            if label == "mulaw_softmax":
                extra = mulaw_bin_bits(pipe.tokenizer.config.mu)
                spread = sum(float(extra[pipe.tokenizer.encode(f).numpy()].sum()) for f in files)
                row["bits_per_16bit_sample"] = score.bits_per_unit + spread / score.units
                row["bits_per_mulaw_code"] = score.bits_per_unit
            else:
                row["bits_per_16bit_sample"] = score.bits_per_unit
            gen = pipe.sample(4, cond=[3, 5, 7, 9], max_new_tokens=8000, temperature=args.temperature,
                              seed=0)
            wav_dir = out / label / "benchmark_samples"
            wav_dir.mkdir(parents=True, exist_ok=True)
            for digit, wave in zip([3, 5, 7, 9], gen, strict=True):
                sf.write(wav_dir / f"digit_{digit}.wav", np.asarray(wave, np.float32), 8000,
                         subtype="PCM_16")
            row["samples"] = str(wav_dir)
            results[label] = row
    c, m = results["continuous_mog"], results["mulaw_softmax"]
    emit({"benchmark": "fsdd_continuous", "seconds_each": args.seconds,
          "threads": torch.get_num_threads(), "results": results,
          "continuous_minus_mulaw_bits_per_16bit_sample":
              c["bits_per_16bit_sample"] - m["bits_per_16bit_sample"],
          "uniform_16bit_bits": math.log2(65536)})


if __name__ == "__main__":
    main()
