"""Drawing one value per row: `priors.heads.base.draw` (inverting each row's cdf at one uniform
number) against `torch.multinomial`, side by side on the same probabilities.

    OMP_NUM_THREADS=1 python benchmarks/draw_speed.py [--calls 3000]

Microseconds per call for (batch, values) shapes that decoding meets: batch 1 to 64 over 2
(binary pixels), 65 (characters) and 256 (mu-law levels) values; alternating rounds, process CPU
time, medians; the ratio is multinomial / draw.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu, emit  # noqa: E402

from priors.heads.base import draw  # noqa: E402

SHAPES = [(1, 2), (1, 256), (16, 65), (16, 256), (64, 2), (64, 65), (64, 256)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    rows = {}
    for B, V in SHAPES:
        probs = torch.softmax(torch.randn(B, V, generator=g), -1)
        ways = {"draw": lambda p=probs: draw(p, g),
                "multinomial": lambda p=probs: torch.multinomial(p, 1, generator=g)}
        times = {k: [] for k in ways}
        for _ in range(args.rounds):
            for name, f in ways.items():
                for _ in range(20):
                    f()
                start = time.process_time()
                for _ in range(args.calls):
                    f()
                times[name].append((time.process_time() - start) / args.calls * 1e6)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows[f"batch_{B}_values_{V}"] = {"draw_us": round(med["draw"], 1),
                                         "multinomial_us": round(med["multinomial"], 1),
                                         "multinomial_over_draw": round(med["multinomial"] / med["draw"], 2)}
    emit({"benchmark": "draw_speed", "calls": args.calls, "rounds": args.rounds, "shapes": rows,
          "threads": torch.get_num_threads(), "cpu": cpu()})


if __name__ == "__main__":
    main()
