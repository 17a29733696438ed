"""Tiny Shakespeare, one scale: char_gpt vs char_lstm vs bpe_gpt at the same CPU time budget,
validation in bits per character; plus BPE training time and encoding throughput.

    TOKAR_DATA_DIR=../shared/data python benchmarks/shakespeare_compare.py [--seconds 300]

Each recipe is first timed for 30 steps; its `max_steps` is then set to fill the budget (so the
warmup + cosine schedule ends with the budget) and `max_seconds` caps it. Validation: the whole
last 10% of the file scored by Pipeline.score (GPTs: sliding window, 50-100% of the context;
LSTM: the state carried through the whole text). Curves go to docs/shakespeare_curves.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import budget_overrides, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from tokenizers_ar import BPETokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["char_gpt", "char_lstm", "bpe_gpt"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=300)
    args = ap.parse_args()
    results, curves = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in RECIPES:
            recipe = ROOT / "recipes" / "shakespeare" / f"{name}.yaml"
            overrides = budget_overrides(recipe, args.seconds, tmp)
            steps = next(int(o.split("=")[1]) for o in overrides if o.startswith("train.max_steps="))
            pipe = Pipeline.from_recipe(recipe, overrides)
            start = time.perf_counter()
            result = pipe.train(tmp / name, progress=False)
            wall = time.perf_counter() - start
            score = pipe.score()
            sample = pipe.sample(1, max_new_tokens=400, temperature=0.8, top_k=40, seed=0)[0]
            rows = [json.loads(x) for x in (tmp / name / "metrics.jsonl").read_text().splitlines()]
            curves[name] = [(r["elapsed_s"], r["bits_per_char"]) for r in rows if r["split"] == "val"]
            results[name] = {
                "parameters": pipe.prior.num_parameters(),
                "steps": result.steps, "planned_steps": steps, "train_seconds": result.seconds,
                "wall_seconds": wall, "tokens_per_second": result.tokens_per_second,
                "val_bits_per_char": score.bits_per.get("char"),
                "val_nats_per_char": score.bits_per.get("char") * 0.6931471805599453,
                "val_bits_per_byte": score.bits_per.get("byte"),
                "sample": sample,
            }
            print(f"{name}: {results[name]['val_nats_per_char']:.4f} nats/char after "
                  f"{result.steps} steps", file=sys.stderr)
        text = pipe.recipe.data.cls(pipe.recipe.data.config).load()["train"]["example"][0]

    bpe = BPETokenizer(vocab_size=512)
    start = time.perf_counter()
    bpe.fit([text])
    fit_s = time.perf_counter() - start
    lines = text.splitlines(keepends=True)
    start = time.perf_counter()
    one = bpe.encode(text)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    bpe.encode_batch(lines)
    batch_s = time.perf_counter() - start
    mb = len(text.encode()) / 1e6

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation bits per character")
    ax.set_title(f"Tiny Shakespeare, {args.seconds:.0f} s budget, 2 CPU cores")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "shakespeare_curves.png", dpi=80)

    gpt, lstm = results["char_gpt"]["val_nats_per_char"], results["char_lstm"]["val_nats_per_char"]
    emit({
        "benchmark": "shakespeare_compare", "budget_seconds": args.seconds, "results": results,
        "char_lstm_minus_char_gpt_nats_per_char": lstm - gpt,
        "bpe": {"vocab_size": 512, "fit_seconds_train_split": fit_s,
                "chars_per_token": len(text) / one.numel(),
                "encode_MB_per_s_one_string": mb / single_s,
                "encode_MB_per_s_batch_of_lines": mb / batch_s},
        "targets": {"char_lstm - char_gpt": "<= 0.1 nats/char"},
        "curves": "docs/shakespeare_curves.png",
    })


if __name__ == "__main__":
    main()
