"""Few-row matrix products with pre-packed weights (priors/packed.py) vs PyTorch's default, on the
weights of the 6x6x384 char GPT, and what it changes for a GPT decoding step of k tokens.

    OMP_NUM_THREADS=1 python benchmarks/packed_linear.py [--rounds 5] [--threads 1]

Products: the 24 weight matrices of six 384-wide blocks (qkv, attention output, MLP in and out)
multiplied in turn by a (rows, in) input, as a decoding step does, default (F.linear) and
oneDNN with packed weights at every row count (`packed_path`: whether priors/packed.py takes
it there), alternating, best of `--rounds`; rows 1 to 64. Step: one `GPT.step` of k tokens
(a speculative verification pass of k - 1 drafts, or a prompt chunk) on a random-weight
6x6x384 GPT after 16 tokens, with packing on and off, k = 1 to 17 (k = 1 is the single-token
path, which never packs). Times are process CPU seconds per call; ratios are default / packed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu, emit  # noqa: E402

from plugins.shared import Layout  # noqa: E402
from priors import GPT, GPTConfig, packed  # noqa: E402

SHAPES = [(1152, 384), (384, 384), (1536, 384), (384, 1536)] * 6


def best_of(fn, rounds: int, calls: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best


def products(rounds: int) -> list[dict]:
    layers = [nn.Linear(i, o) for o, i in SHAPES]
    weights = [torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), None) for m in layers]
    out = []
    for rows in (1, 2, 3, 5, 9, 16, 32, 64):
        xs = {i: torch.randn(rows, i) for i in (384, 1536)}
        def default(xs=xs):
            return [F.linear(xs[m.in_features], m.weight, m.bias) for m in layers]

        def pack(xs=xs):  # oneDNN at every row count, whatever packed.linear would choose
            return [torch.ops.mkldnn._linear_pointwise(xs[m.in_features], w, m.bias, "none", [], "")
                    for m, w in zip(layers, weights, strict=True)]

        t_default = t_packed = float("inf")
        for _ in range(rounds):  # alternating, so both see the same neighbours
            t_default = min(t_default, best_of(default, 1, 10))
            t_packed = min(t_packed, best_of(pack, 1, 10))
        out.append({"rows": rows, "packed_path": packed.packs(xs[384], layers[0]),
                    "default_ms": 1e3 * t_default, "packed_ms": 1e3 * t_packed,
                    "default_over_packed": t_default / t_packed})
        print(f"rows {rows}: default {1e3 * t_default:.2f} ms, packed {1e3 * t_packed:.2f} ms",
              file=sys.stderr)
    return out


def steps(rounds: int) -> list[dict]:
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=128), 65, Layout.seq()).eval()
    ids = torch.randint(0, 65, (1, 64))
    available = packed._AVAILABLE
    out = []
    for k in (1, 2, 3, 5, 9, 17):
        times = {}
        for mode in ("default", "packed", "default", "packed"):  # alternating
            packed._AVAILABLE = available and mode == "packed"
            _, state = gpt.init_state(1)
            gpt.step(state, ids[:, :16])

            def one(state=state, k=k):
                gpt.step(state, ids[:, 16 : 16 + k])
                gpt.rewind(state, k)  # the same positions every call

            times[mode] = min(times.get(mode, float("inf")), best_of(one, rounds, 10))
        packed._AVAILABLE = available
        out.append({"k": k, "default_ms": 1e3 * times["default"], "packed_ms": 1e3 * times["packed"],
                    "default_over_packed": times["default"] / times["packed"],
                    "packed_step_over_one_token": None})
        print(f"step of {k}: default {1e3 * times['default']:.2f} ms, packed "
              f"{1e3 * times['packed']:.2f} ms", file=sys.stderr)
    one_token = out[0]["packed_ms"]
    for row in out:
        row["packed_step_over_one_token"] = row["packed_ms"] / one_token
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        result = {"benchmark": "packed_linear", "cpu": cpu(), "threads": args.threads,
                  "onednn": packed._AVAILABLE, "products": products(args.rounds),
                  "gpt_step": steps(args.rounds)}
    emit(result)


if __name__ == "__main__":
    main()
