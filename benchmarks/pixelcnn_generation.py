"""Cached (Fast PixelCNN) vs naive generation of 16 images of 28 x 28 with the Gated PixelCNN of
recipes/binarized_mnist/pixel_pixelcnn.yaml (random weights: speed does not depend on them).

    python benchmarks/pixelcnn_generation.py

Naive: a full forward pass over the image for every pixel (784 passes). Cached: `init_state`/
`step`, one column per layer per pixel. Both sample the same 784 tokens per image; the check
that they define the same conditionals is a test (tests/priors/test_pixelcnn.py).
Target: cached >= 10x faster.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from priors import DecodeConfig, generate  # noqa: E402
from priors.pixelcnn import PixelCNN, PixelCNNConfig  # noqa: E402
from tokenizers_ar import Layout  # noqa: E402

N, H, W = 16, 28, 28


@torch.no_grad()
def naive(model: PixelCNN) -> float:
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(N, H * W, dtype=torch.long)
    start = time.perf_counter()
    for t in range(H * W):
        probs = torch.softmax(model(ids)[:, t], dim=-1)  # pixels >= t do not affect position t
        ids[:, t] = torch.multinomial(probs, 1, generator=g)[:, 0]
    return time.perf_counter() - start


@torch.no_grad()
def cached(model: PixelCNN) -> float:
    start = time.perf_counter()
    out = generate(model, N, DecodeConfig(max_new_tokens=H * W),
                   generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (N, H * W)
    return time.perf_counter() - start


def main() -> None:
    torch.manual_seed(0)
    config = PixelCNNConfig(n_layer=7, n_channels=32, first_kernel_size=7, kernel_size=3, n_out=64)
    model = PixelCNN(config, 2, Layout.grid(H, W)).eval()
    cached(model)  # warm-up
    t_cached = min(cached(model) for _ in range(2))
    t_naive = naive(model)
    emit({"benchmark": "pixelcnn_generation", "images": N, "size": [H, W],
          "model": "gated pixelcnn 7 layers x 32 channels, first kernel 7, then 3",
          "cached_seconds": t_cached, "naive_seconds": t_naive, "speedup": t_naive / t_cached,
          "target": ">= 10x"})


if __name__ == "__main__":
    main()
