"""Batch generation throughput of every prior: tokens per second at batch 1, 16 and 64.

    python benchmarks/batch_throughput.py [--threads N] [--rounds 2]

Models at the sizes of their recipes, random weights (speed does not depend on them): `gpt`
6x6x384 over 65 characters (char_gpt_large), `lstm` 2 x 256 over 65 characters (char_lstm),
`pixelcnn` 7 x 32 over binary 28x28 images (binarized_mnist), `wavenet` 2 x 10 layers, 64/128
channels over 256 mu-law levels (fsdd mulaw_wavenet; `wavenet_compiled`: the same with
`DecodeConfig(compile=True)`, the native step on a CPU); and the binarized-MNIST recipes' `fvsbn`,
`nade` (500 hidden), `made` (500 hidden, 32 masks) and `rnn` (256 hidden). Each generates
`--tokens` values per row by ancestral sampling at temperature 1 through `priors.generate` (the
path compression and anomaly detection share), rounds alternating over batch sizes, medians
reported with the CPU share the process got.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, cpu, emit  # noqa: E402

from plugins.shared import Layout  # noqa: E402
from priors import DecodeConfig, generate  # noqa: E402
from priors.fvsbn import FVSBN, FVSBNConfig  # noqa: E402
from priors.gpt import GPT, GPTConfig  # noqa: E402
from priors.lstm import LSTM, LSTMConfig  # noqa: E402
from priors.made import MADE, MADEConfig  # noqa: E402
from priors.nade import NADE, NADEConfig  # noqa: E402
from priors.pixelcnn import PixelCNN, PixelCNNConfig  # noqa: E402
from priors.rnn import RNN, RNNConfig  # noqa: E402
from priors.wavenet import WaveNet, WaveNetConfig  # noqa: E402

BATCHES = (1, 16, 64)
MNIST = Layout.grid(28, 28)


def priors(device: str = "cpu") -> dict[str, tuple[torch.nn.Module, int, torch.Tensor | None]]:
    """name -> (prior, tokens per row, cond)."""
    torch.manual_seed(0)
    return {
        "gpt": (GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=256), 65, Layout.seq()), 128, None),
        "lstm": (LSTM(LSTMConfig(n_layer=2, n_embd=64, n_hidden=256), 65, Layout.seq()), 256, None),
        "pixelcnn": (PixelCNN(PixelCNNConfig(n_layer=7, n_channels=32, first_kernel_size=7, kernel_size=3,
                                             n_out=64), 2, Layout.grid(28, 28)), 784, None),
        "wavenet": (WaveNet(WaveNetConfig(n_layer=10, n_block=2, n_residual=64, n_skip=128, n_classes=10),
                            256, Layout.seq()), 512, "digit"),
        "wavenet_compiled": (WaveNet(WaveNetConfig(n_layer=10, n_block=2, n_residual=64, n_skip=128,
                                                   n_classes=10), 256, Layout.seq()), 512, "digit"),
        "fvsbn": (FVSBN(FVSBNConfig(head="bernoulli"), 2, MNIST), 784, None),
        "nade": (NADE(NADEConfig(head="bernoulli", n_hidden=500), 2, MNIST), 784, None),
        "made": (MADE(MADEConfig(head="bernoulli", n_hidden=500, n_masks=32), 2, MNIST), 784, None),
        "rnn": (RNN(RNNConfig(n_layer=1, n_embd=16, n_hidden=256, head="bernoulli"), 2, MNIST), 784, None),
    }


@torch.no_grad()
def tokens_per_second(prior, batch: int, tokens: int, cond, compile: bool = False) -> float:
    device = next(prior.parameters()).device
    labels = torch.full((batch,), 3, device=device) if cond else None
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = generate(prior, batch, DecodeConfig(max_new_tokens=tokens, compile=compile), cond=labels,
                   generator=torch.Generator().manual_seed(0))
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert out.tokens.shape[:2] == (batch, tokens)
    return batch * tokens / (time.perf_counter() - start)


def run(names: list[str], rounds: int, device: str = "cpu", scale: float = 1.0) -> dict:
    table = {}
    for name, (prior, tokens, cond) in priors().items():
        if name not in names:
            continue
        prior = prior.to(device).eval()
        tokens = max(8, int(tokens * scale))
        compile = name.endswith("_compiled")
        tokens_per_second(prior, 1, 8, cond, compile)  # warm-up (and the compilation)
        tps = {b: [] for b in BATCHES}
        with Stopwatch() as watch:
            for r in range(rounds):
                for b in (BATCHES if r % 2 == 0 else tuple(reversed(BATCHES))):
                    tps[b].append(tokens_per_second(prior, b, tokens, cond, compile))
        med = {b: statistics.median(v) for b, v in tps.items()}
        table[name] = {"tokens_per_row": tokens,
                       "tokens_per_second": {f"batch_{b}": round(v, 1) for b, v in med.items()},
                       "speedup_64_over_1": round(med[64] / med[1], 2), "cpu_share": watch.cpu_share}
        print(name, table[name], file=sys.stderr)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--priors", nargs="*", default=["gpt", "lstm", "pixelcnn", "wavenet",
                                                    "wavenet_compiled", "fvsbn", "nade", "made", "rnn"])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the tokens per row")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    emit({"benchmark": "batch_throughput", "cpu": cpu(), "rounds": args.rounds,
          "priors": run(args.priors, args.rounds, scale=args.scale)})


if __name__ == "__main__":
    main()
