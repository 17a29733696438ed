"""The trainer's AdamW, fused (one kernel over all tensors per step, what pipelines/training/trainer.py uses
on the CPU and CUDA) vs foreach (PyTorch's default on the CPU: a dozen passes over the tensor
lists), in whole training steps per second of three priors, on this machine, in one run.

    OMP_NUM_THREADS=1 python benchmarks/optimizer_fused.py [--rounds 3] [--steps 8]

A step is forward, loss, backward, gradient clipping and the optimizer step, with the trainer's
parameter groups (pipelines/train.param_groups, weight decay 0.1), on random batches of each
recipe's shape. Rounds alternate foreach and fused so that machine noise hits both alike; the
ratio is of the medians of process CPU time on one thread (wall time otherwise). The optimizer
matters most where updating the weights touches as many numbers as the products do: a wide MADE
layer (binarized MNIST, batch 100) more than a GPT.
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

from pipelines.training.trainer import param_groups  # noqa: E402
from priors.gpt import GPT, GPTConfig  # noqa: E402
from priors.made import MADE, MADEConfig  # noqa: E402
from priors.pixelcnn import PixelCNN, PixelCNNConfig  # noqa: E402
from tokenizers_ar import Layout  # noqa: E402


def models() -> dict[str, tuple]:
    """name: (prior factory, batch of token ids), the shapes of the recipes they stand for."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 2, (100, 784), generator=g)
    return {
        "made 1 x 8000, 32 masks (binarized_mnist/made.yaml, prior.n_hidden=8000), batch 100": (
            lambda: MADE(MADEConfig(n_hidden=8000, n_masks=32, head="bernoulli"), 2, Layout.grid(28, 28)),
            pixels),
        "gpt 6 x 6 x 384 (shakespeare/char_gpt_large.yaml), batch 12 x 128": (
            lambda: GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=128), 65, Layout.seq()),
            torch.randint(0, 65, (12, 128), generator=g)),
        "pixelcnn 7 x 32 (binarized_mnist/pixel_pixelcnn.yaml), batch 32": (
            lambda: PixelCNN(PixelCNNConfig(n_layer=7, n_channels=32, first_kernel_size=7, kernel_size=3,
                                            n_out=64), 2, Layout.grid(28, 28)),
            pixels[:32]),
    }


def clock() -> float:
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def steps_per_second(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                     steps: int) -> float:
    start = clock()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        model.loss(x).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return steps / (clock() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per round")
    args = ap.parse_args()
    table = {}
    for name, (make, x) in models().items():
        torch.manual_seed(0)
        pair = {}
        for fused in (False, True):  # one model each: the moments of one never reach the other
            model = make().train()
            opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, fused=fused)
            steps_per_second(model, opt, x, 2)  # warm-up: allocations, the moments' first step
            pair["fused" if fused else "foreach"] = (model, opt)
        rates = {kind: [] for kind in pair}
        for r in range(args.rounds):
            for kind in (list(pair) if r % 2 == 0 else list(reversed(pair))):
                rates[kind].append(steps_per_second(*pair[kind], x, args.steps))
        med = {kind: statistics.median(v) for kind, v in rates.items()}
        table[name] = {"foreach_steps_per_s": med["foreach"], "fused_steps_per_s": med["fused"],
                       "fused_over_foreach": med["fused"] / med["foreach"],
                       "parameters": sum(p.numel() for p in pair["fused"][0].parameters())}
        print(f"{name}: {table[name]['fused_over_foreach']:.2f}x", file=sys.stderr)
    emit({"benchmark": "optimizer_fused", "cpu": cpu(), "threads": torch.get_num_threads(),
          "clock": "process CPU time" if torch.get_num_threads() == 1 else "wall",
          "rounds": args.rounds, "steps_per_round": args.steps, "models": table})


if __name__ == "__main__":
    main()
