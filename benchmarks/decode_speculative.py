"""Speculative decoding on trained Tiny Shakespeare models, every draft kind vs the target alone,
and the quality cost of reduced-precision weights.

    TOKAR_DATA_DIR=../shared/data tokar train recipes/shakespeare/char_gpt_large.yaml --run-dir runs/large
    TOKAR_DATA_DIR=../shared/data tokar train recipes/shakespeare/char_gpt_draft.yaml --run-dir runs/draft
    TOKAR_DATA_DIR=../shared/data tokar train recipes/shakespeare/char_ngram_draft.yaml \
        --run-dir runs/ngram_data
    TOKAR_DATA_DIR=../shared/data tokar train recipes/shakespeare/char_ngram_distilled_draft.yaml \
        data.run=runs/large tokenizer.pretrained=runs/large --run-dir runs/ngram_distilled
    TOKAR_DATA_DIR=../shared/data python benchmarks/decode_speculative.py runs/large \
        --draft runs/draft --draft runs/ngram_data --draft runs/ngram_distilled@8 [--small runs/small]

Draft kinds: each `--draft` run (a prior; RUN@K proposes K tokens per round, RUN alone
--draft-tokens), `ngram` (prompt lookup, no model) and `layers:M` (the target's first M layers)
for each `--layers M`. 256 new tokens after 64 characters of the validation text (prompts
spread uniformly over it), greedy and temperature 1; for each prompt the target alone and every
draft kind run in one alternating round (order reversed on odd prompts); acceptance rate and
wall-clock speed-up over the target alone (median over prompts). Greedy outputs are checked
identical to the target's own. Precision: validation bits/char of the target (and of `--small`)
in fp32, bf16 and int8, each scored the same way (Pipeline.score over 20,000 characters spread
uniformly over the validation text).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, cpu, draft_runs, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402


def timed(pipe: Pipeline, **kw) -> tuple[float, object]:
    start = time.perf_counter()
    out = pipe.generate(1, **kw)
    return time.perf_counter() - start, out


def uniform_slices(text: str, n: int, size: int) -> list[str]:
    step = (len(text) - size) // max(1, n)
    return [text[i * step : i * step + size] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--draft", action="append", default=[],
                    help="a draft run, RUN or RUN@K with K draft tokens per round (repeatable)")
    ap.add_argument("--layers", type=int, action="append", default=None,
                    help="self-speculation with the target's first M layers (repeatable)")
    ap.add_argument("--small", help="a second run for the precision table")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--draft-tokens", type=int, default=4)
    ap.add_argument("--ngram-draft-tokens", type=int, default=8)
    ap.add_argument("--no-precision", action="store_true")
    args = ap.parse_args()
    target = Pipeline.load(args.target)
    n_layer = target.prior.config.n_layer
    kinds: dict[str, tuple[object, int]] = {"ngram": ("ngram", args.ngram_draft_tokens)}
    for m in args.layers or [max(1, n_layer // 3)]:
        kinds[f"layers:{m}"] = (f"layers:{m}", args.draft_tokens)
    for name, (run, k) in draft_runs(args.draft, args.draft_tokens).items():
        kinds[name] = (Pipeline.load(run), k)
    splits = target.recipe.data.cls(target.recipe.data.config).load()
    val_text = splits["validation"]["example"][0]
    prompts = uniform_slices(val_text, args.prompts, 64)

    speculative = {}
    watch = Stopwatch().__enter__()
    for mode, kw in {"greedy": {"greedy": True}, "temperature_1": {"temperature": 1.0}}.items():
        alone: list[float] = []
        per_kind = {k: {"seconds": [], "rates": [], "same": []} for k in kinds}
        for i, prompt in enumerate(prompts):
            common = dict(prompt=prompt, max_new_tokens=args.new_tokens, seed=i, top_k=None,
                          top_p=None, min_p=None, **kw)
            order = ["alone", *kinds]
            if i % 2:
                order.reverse()
            results = {}
            for name in order:
                extra = {} if name == "alone" else {"draft": kinds[name][0],
                                                    "num_draft_tokens": kinds[name][1]}
                results[name] = timed(target, **common, **extra)
            alone.append(results["alone"][0])
            for k in kinds:
                per_kind[k]["seconds"].append(results[k][0])
                per_kind[k]["rates"].append(results[k][1].acceptance_rate or 0.0)
                per_kind[k]["same"].append(bool((results[k][1].tokens == results["alone"][1].tokens).all()))
            print(f"{mode} prompt {i}: alone {alone[-1]:.2f}s, " + ", ".join(
                f"{k} {results[k][0]:.2f}s ({results[k][1].acceptance_rate or 0:.2f})" for k in kinds),
                file=sys.stderr)
        speculative[mode] = {"target_alone_seconds": alone,
                             "target_tokens_per_second_median": args.new_tokens / statistics.median(alone)}
        for k, r in per_kind.items():
            speculative[mode][k] = {
                "draft_tokens": kinds[k][1],
                "seconds": r["seconds"],
                "acceptance_rate_mean": statistics.mean(r["rates"]),
                "speedup_median": statistics.median(a / s for a, s in zip(alone, r["seconds"], strict=True)),
                **({"identical_to_target_greedy": all(r["same"])} if mode == "greedy" else {}),
            }
    watch.__exit__(None, None, None)

    precision = {}
    if not args.no_precision:
        text = "".join(uniform_slices(val_text, 20, 1000))
        for name, run in (("target", args.target), ("small", args.small)):
            if run is None:
                continue
            scores = {p: Pipeline.load(run, precision=p).score([text]).bits_per_unit
                      for p in ("fp32", "bf16", "int8")}
            precision[name] = {"run": run, "bits_per_char": scores,
                               "delta_bf16": scores["bf16"] - scores["fp32"],
                               "delta_int8": scores["int8"] - scores["fp32"]}
    emit({"benchmark": "decode_speculative", "target": args.target,
          "prompts": len(prompts), "new_tokens": args.new_tokens, "cpu": cpu(),
          "cpu_share": watch.cpu_share, "speculative": speculative,
          "precision_quality": precision,
          "targets": {"speculative speedup (best kind)": ">= 1.5",
                      "precision bits/char change": "<= 0.01"}})


if __name__ == "__main__":
    main()
