"""Speed of the integer-exact coding step (priors/integer.py) against the float step it replaces,
for the issue's decode target (>= 20 KB/s of text with a 4-layer, 4-head, 128-wide char GPT at
batch 64-256 on 2 cores).

    python benchmarks/exact_coding.py [--steps 255] [--batch 64 --batch 256 --batch 1024]

Randomly initialised priors (speed does not depend on the weights): that char GPT with
block_size 256 (`--block-size 64`: the recipe's), under both coder formats (1: float64 products,
priors/gpt_exact_v1.py; 2: float32-exact products, priors/gpt_exact.py), and the default char
LSTM (2 layers, n_embd 128, n_hidden 512), vocabulary 65.
Each timing codes one state from init_state through `--steps` steps (a whole GPT block, so
attention over every cache length is in the mean); the float column is the float prior's
`step` plus `quantized_pmf` (what non-portable compression computes per token). Tokens/s is
steps/s times the batch: characters per second for a char tokenizer. Both wall-clock and
process CPU time are reported: on a shared, loaded machine the CPU-time rate (per thread used)
is the stable one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from plugins.shared import Layout  # noqa: E402
from priors import GPT, LSTM, GPTConfig, LSTMConfig  # noqa: E402
from priors.gpt_exact_v1 import GPTExactCoderV1  # noqa: E402


def rates(run, steps: int, repeats: int) -> tuple[float, float]:
    """Steps per wall-clock second and per CPU second of `run()`, which does steps + 1: the
    median over `repeats` runs (a shared machine's noise)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append((steps + 1) / (time.perf_counter() - wall))
        cpus.append((steps + 1) / (time.process_time() - cpu))
    return statistics.median(walls), statistics.median(cpus)


def exact_run(coder, batch: int, steps: int):
    ids = torch.randint(0, coder.vocab_size, (steps, batch))

    def run():
        _, state = coder.init_state(batch)
        for t in range(steps):
            _, state = coder.step(state, ids[t])
    return run


def float_run(prior, batch: int, steps: int):
    ids = torch.randint(0, prior.vocab_size, (batch, steps))

    @torch.no_grad()
    def run():
        params, state = prior.init_state(batch)
        prior.distribution.quantized_pmf(params)
        for t in range(steps):
            params, state = prior.step(state, ids[:, t : t + 1])
            prior.distribution.quantized_pmf(params[:, -1])
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=255)
    ap.add_argument("--batch", type=int, action="append", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3, help="timings per figure (the median)")
    ap.add_argument("--block-size", type=int, default=256, help="the GPT's context (the "
                    "shakespeare char_gpt recipe: 64); --steps is capped at block_size - 1")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.steps = min(args.steps, args.block_size - 1)
    gpt = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=args.block_size), 65,
              Layout.seq()).eval()
    lstm = LSTM(LSTMConfig(), 65, Layout.seq()).eval()
    coders = {"gpt_4x128": (gpt, gpt.exact_coder()),
              "gpt_4x128_format1": (gpt, GPTExactCoderV1.from_prior(gpt)),
              "lstm_2x512": (lstm, lstm.exact_coder())}
    rows = []
    for name, (prior, coder) in coders.items():
        for batch in args.batch or [64, 256, 1024]:
            exact_run(coder, batch, 8)()  # warm-up
            exact, exact_cpu = rates(exact_run(coder, batch, args.steps), args.steps, args.repeats)
            flt, flt_cpu = rates(float_run(prior, batch, args.steps), args.steps, args.repeats)
            rows.append({"prior": name, "batch": batch,
                         "exact_steps_per_s": round(exact, 1),
                         "exact_tokens_per_s": round(exact * batch),
                         "exact_steps_per_cpu_s": round(exact_cpu, 1),
                         "float_steps_per_s": round(flt, 1),
                         "float_steps_per_cpu_s": round(flt_cpu, 1),
                         "exact_over_float_cpu": round(exact_cpu / flt_cpu, 2)})
            print(rows[-1], file=sys.stderr)
    emit({"benchmark": "exact_coding", "threads": torch.get_num_threads(), "steps": args.steps,
          "repeats": args.repeats,
          "gpt_block_size": args.block_size,
          "results": rows})


if __name__ == "__main__":
    main()
