"""NADE's training step: the blocked layer with its hand-written backward (priors/nade.py) against
the same formula as whole-tensor PyTorch ops under autograd, side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/nade_step.py [--rounds 5] [--batch 100] [--hidden 500]

One step = forward, Bernoulli NLL, backward, Adam, on random 28x28 binary images (the data does
not change the work). Rounds alternate between the two, each timed in process CPU time (the
machine is shared); the medians and their ratio are printed, with the largest difference between
the two implementations' outputs and gradients.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu, emit  # noqa: E402

from plugins.shared import Layout  # noqa: E402
from priors.nade import NADE, NADEConfig, _NADELayer  # noqa: E402


def whole_tensor(e, W, c, V, b):
    """The definition as whole-tensor ops: the (T, B, H) activations go through memory at once."""
    u = e * W if e.size(-1) == 1 else torch.bmm(e, W)
    a = c + u.cumsum(0) - u
    return torch.baddbmm(b[:, None], torch.sigmoid(a), V)


def make_step(model: NADE, layer, x: torch.Tensor):
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step() -> float:
        e = model._embedded(x).transpose(0, 1)
        logits = layer(e, model.W, model.c, model.V, model.b)[..., 0].T
        loss = F.binary_cross_entropy_with_logits(logits, x.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="steps per round")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=500)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = (torch.rand(args.batch, 784) < 0.13).long()  # about MNIST's share of ink
    cfg = NADEConfig(head="bernoulli", n_hidden=args.hidden)
    layers = {"blocked": _NADELayer.apply, "whole_tensor": whole_tensor}

    # agreement: outputs and gradients of one model under both
    model = NADE(cfg, 2, Layout.grid(28, 28))
    grads = {}
    for name, layer in layers.items():
        model.zero_grad()
        e = model._embedded(x).transpose(0, 1)
        out = layer(e, model.W, model.c, model.V, model.b)
        out.square().mean().backward()
        grads[name] = [out.detach()] + [p.grad.clone() for p in model.parameters()]
    max_diff = max((a - b).abs().max().item() for a, b in zip(*grads.values(), strict=True))

    steps = {n: make_step(NADE(cfg, 2, Layout.grid(28, 28)), layer, x) for n, layer in layers.items()}
    for step in steps.values():
        step()  # warm-up
    times = {n: [] for n in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t = time.process_time()
            for _ in range(args.steps):
                step()
            times[name].append((time.process_time() - t) / args.steps)
    med = {n: statistics.median(v) for n, v in times.items()}
    emit({
        "benchmark": "nade_step", "batch": args.batch, "hidden": args.hidden, "positions": 784,
        "cpu_seconds_per_step": med, "steps_per_cpu_second": {n: 1 / v for n, v in med.items()},
        "speedup_blocked_over_whole_tensor": med["whole_tensor"] / med["blocked"],
        "max_abs_difference_outputs_and_grads": max_diff,
        "rounds": args.rounds, "steps_per_round": args.steps,
        "threads": torch.get_num_threads(), "cpu": cpu(),
    })


if __name__ == "__main__":
    main()
