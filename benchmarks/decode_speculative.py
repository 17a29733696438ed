"""Speculative decoding on trained Tiny Shakespeare models vs the target alone, and the quality
cost of reduced-precision weights.

    TOKAR_DATA_DIR=../shared/data tokar train recipes/shakespeare/char_gpt_large.yaml --run-dir runs/large
    TOKAR_DATA_DIR=../shared/data tokar train recipes/shakespeare/char_gpt_draft.yaml --run-dir runs/draft
    TOKAR_DATA_DIR=../shared/data tokar train recipes/shakespeare/char_gpt.yaml --run-dir runs/small
    TOKAR_DATA_DIR=../shared/data python benchmarks/decode_speculative.py runs/large runs/draft runs/small

Speculative: target = the 6x6x384 model, draft = the 1-layer model; 256 new tokens after a
64-character prompt from the validation text, greedy and temperature 1, several prompts, rounds
alternating target-alone and speculative; acceptance rate and wall-clock speedup (median).
Precision: validation bits/char of the 4x4x128 model (and the large one) in fp32, bf16 and int8,
scored the same way (Pipeline.score over the first 20,000 validation characters).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402


def timed(pipe: Pipeline, **kw) -> tuple[float, object]:
    start = time.perf_counter()
    out = pipe.generate(1, **kw)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("draft")
    ap.add_argument("small")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--draft-tokens", type=int, default=4)
    args = ap.parse_args()
    target, draft = Pipeline.load(args.target), Pipeline.load(args.draft)
    splits = target.recipe.data.cls(target.recipe.data.config).load()
    val_text = splits["validation"]["example"][0]
    prompts = [val_text[i * 5000 : i * 5000 + 64] for i in range(args.prompts)]

    speculative = {}
    for mode, kw in {"greedy": {"greedy": True}, "temperature_1": {"temperature": 1.0}}.items():
        alone, spec, rates, same = [], [], [], []
        for i, prompt in enumerate(prompts):
            common = dict(prompt=prompt, max_new_tokens=256, seed=i, **kw)
            pairs = [("alone", {}), ("spec", {"draft": draft, "num_draft_tokens": args.draft_tokens})]
            if i % 2:
                pairs.reverse()
            results = {}
            for name, extra in pairs:
                results[name] = timed(target, **common, **extra)
            alone.append(results["alone"][0])
            spec.append(results["spec"][0])
            rates.append(results["spec"][1].acceptance_rate)
            same.append(bool((results["spec"][1].tokens == results["alone"][1].tokens).all()))
            print(f"{mode} prompt {i}: alone {alone[-1]:.2f}s, speculative {spec[-1]:.2f}s, "
                  f"acceptance {rates[-1]:.2f}", file=sys.stderr)
        speculative[mode] = {
            "target_alone_seconds": alone, "speculative_seconds": spec,
            "acceptance_rate_mean": statistics.mean(rates),
            "speedup_median": statistics.median(a / s for a, s in zip(alone, spec, strict=True)),
            "target_tokens_per_second_median": 256 / statistics.median(alone),
            "speculative_tokens_per_second_median": 256 / statistics.median(spec),
        }
        if mode == "greedy":
            speculative[mode]["identical_to_target_greedy"] = all(same)

    text = val_text[:20_000]
    precision = {}
    for name, run in (("small_4x4x128", args.small), ("large_6x6x384", args.target)):
        scores = {p: Pipeline.load(run, precision=p).score([text]).bits_per_unit
                  for p in ("fp32", "bf16", "int8")}
        precision[name] = {"bits_per_char": scores,
                           "delta_bf16": scores["bf16"] - scores["fp32"],
                           "delta_int8": scores["int8"] - scores["fp32"]}
    emit({"benchmark": "decode_speculative", "draft_tokens": args.draft_tokens,
          "prompts": len(prompts), "new_tokens": 256, "speculative": speculative,
          "precision_quality": precision,
          "targets": {"speculative speedup": ">= 1.5", "precision bits/char change": "<= 0.01"}})


if __name__ == "__main__":
    main()
