"""Fast WaveNet (Paine et al. 2016) vs naive generation of one second of 8 kHz audio with the
WaveNet of recipes/fsdd/mulaw_wavenet.yaml (random weights: speed does not depend on them).

    python benchmarks/wavenet_generation.py [--samples 8000] [--naive-samples 400] [--threads 1]

Naive: for every new sample, the whole stack recomputed over the receptive field (2,047 inputs,
`WaveNet.naive_next_logits`). Fast: `init_state`/`step`, per-layer queues, O(layers) per sample.
Both sample token by token from the softmax with the same loop. Naive is timed on a prefix of
`--naive-samples` samples (its cost per sample is constant once the prefix passes the receptive
field, which the timed prefix starts after) and reported per sample; the JSON says so.
Real-time factor: seconds of audio made per second of compute (>= 1: faster than real time).
That the two give the same conditionals is a test (tests/priors/test_wavenet.py). Target:
fast >= 20x naive.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, cpu, emit  # noqa: E402

from priors.wavenet import WaveNet, WaveNetConfig  # noqa: E402
from tokenizers_ar import Layout  # noqa: E402

RATE = 8000


def draw(logits: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g)  # (B, 1)


@torch.no_grad()
def fast(model: WaveNet, n: int, cond: torch.Tensor, batch: int = 1) -> float:
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    logits, state = model.init_state(batch, cond.expand(batch))
    for _ in range(n):
        out, state = model.step(state, draw(logits, g))
        logits = out[:, -1]
    return time.perf_counter() - start


@torch.no_grad()
def naive(model: WaveNet, n: int, cond: torch.Tensor) -> float:
    """Seconds for `n` samples, timed after a prefix of one receptive field."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.vocab_size, (1, model.receptive_field), generator=g)
    start = time.perf_counter()
    for _ in range(n):
        ids = torch.cat([ids, draw(model.naive_next_logits(ids, cond), g)], dim=1)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=RATE, help="fast: samples generated (1 s)")
    p.add_argument("--naive-samples", type=int, default=400, help="naive: samples timed")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = WaveNetConfig(n_layer=10, n_block=2, n_residual=64, n_skip=128, n_classes=10)
    model = WaveNet(config, 256, Layout.seq()).eval()
    cond = torch.tensor([3])
    fast(model, 50, cond), naive(model, 5, cond)  # warm-up
    with Stopwatch() as watch:
        t_fast = fast(model, args.samples, cond)
        t_fast16 = fast(model, args.samples, cond, batch=16)
        t_naive = naive(model, args.naive_samples, cond)
    fast_rate, naive_rate = args.samples / t_fast, args.naive_samples / t_naive
    emit({"benchmark": "wavenet_generation", "cpu": cpu(), "cpu_share": watch.cpu_share,
          "batch_16": {"seconds": t_fast16, "samples_per_s_per_stream": args.samples / t_fast16,
                       "aggregate_samples_per_s": 16 * args.samples / t_fast16,
                       "aggregate_real_time_factor": 16 * args.samples / t_fast16 / RATE},
          "model": "wavenet 2 blocks x 10 layers (dilations 1..512), 64 residual, 128 skip channels, "
                   "kernel 2, digit-conditioned",
          "receptive_field": model.receptive_field,
          "fast_samples": args.samples, "fast_seconds": t_fast, "fast_samples_per_s": fast_rate,
          "naive_samples_timed": args.naive_samples, "naive_seconds": t_naive,
          "naive_samples_per_s": naive_rate,
          "naive_note": f"naive timed on {args.naive_samples} samples after a one-receptive-field "
                        "prefix (constant cost per sample), not on all of them",
          "speedup": fast_rate / naive_rate,
          "real_time_factor_fast": fast_rate / RATE, "real_time_factor_naive": naive_rate / RATE,
          "targets": {"fast/naive": ">= 20x", "real-time factor at batch 1": ">= 0.5",
                      "aggregate real-time factor at batch 16": ">= 1"}})


if __name__ == "__main__":
    main()
