"""Cached (Fast PixelCNN) vs naive generation of 16 images of 28 x 28 with the Gated PixelCNN of
recipes/binarized_mnist/pixel_pixelcnn.yaml (random weights: speed does not depend on them).

    python benchmarks/pixelcnn_generation.py [--threads N]
    python benchmarks/pixelcnn_generation.py --target RUN --draft RUN[@K] ... [--images 4] [--skip-naive]

Speculative image decoding (trained binarized-MNIST runs): each `--draft` run (a small PixelCNN,
recipes/binarized_mnist/pixelcnn_draft.yaml; an n-gram over the raster,
recipes/binarized_mnist/ngram_draft.yaml) and `ngram` (prompt lookup over the raster so far),
each against the target alone, one image at a time at temperature 1, alternating; acceptance
rate and speed-up (medians).

Naive: a full forward pass over the image for every pixel (784 passes). Cached: `init_state`/
`step`, one column per layer per pixel. Both sample the same 784 tokens per image; the check
that they define the same conditionals is a test (tests/priors/test_pixelcnn.py).
Target: cached >= 50x faster.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, cpu, draft_runs, emit  # noqa: E402

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


def speculative(target_run: str, drafts: list[str], images: int, draft_tokens: int) -> dict:
    import statistics

    from pipelines import Pipeline

    target = Pipeline.load(target_run)
    kinds: dict[str, dict] = {"alone": {}}
    for name, (run, k) in draft_runs(drafts, draft_tokens).items():
        kinds[name] = {"draft": Pipeline.load(run), "num_draft_tokens": k}
    kinds["ngram"] = {"draft": "ngram:8", "num_draft_tokens": 2 * draft_tokens}
    seconds = {k: [] for k in kinds}
    rates = {k: [] for k in kinds if k != "alone"}
    with Stopwatch() as watch:
        for i in range(images):
            for k in (list(kinds) if i % 2 == 0 else list(reversed(kinds))):
                start = time.perf_counter()
                out = target.generate(1, seed=i, temperature=1.0, **kinds[k])
                seconds[k].append(time.perf_counter() - start)
                if k != "alone":
                    rates[k].append(out.acceptance_rate)
            print(f"image {i}: " + ", ".join(f"{k} {seconds[k][-1]:.2f}s" for k in kinds), file=sys.stderr)
    alone = seconds["alone"]
    return {"target": target_run, "drafts": drafts, "images": images, "cpu_share": watch.cpu_share,
            "seconds_per_image_alone_median": statistics.median(alone),
            **{k: {"draft_tokens": kinds[k]["num_draft_tokens"],
                   "acceptance_rate_mean": statistics.mean(rates[k]),
                   "seconds_per_image_median": statistics.median(seconds[k]),
                   "speedup_median": statistics.median(a / s for a, s in zip(alone, seconds[k], strict=True))}
               for k in rates}}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--target", help="a trained pixelcnn run (speculative part)")
    ap.add_argument("--draft", action="append", default=[],
                    help="a draft run with the same tokenizer, RUN or RUN@K (repeatable)")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--draft-tokens", type=int, default=4)
    ap.add_argument("--skip-naive", action="store_true", help="only the speculative part")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"benchmark": "pixelcnn_generation", "cpu": cpu()}
    if not args.skip_naive:
        torch.manual_seed(0)
        config = PixelCNNConfig(n_layer=7, n_channels=32, first_kernel_size=7, kernel_size=3, n_out=64)
        model = PixelCNN(config, 2, Layout.grid(H, W)).eval()
        cached(model)  # warm-up
        with Stopwatch() as watch:
            t_cached = min(cached(model) for _ in range(2))
            t_naive = naive(model)
            t_cached = min(t_cached, cached(model))  # either side of the naive run
        result.update({"images": N, "size": [H, W],
                       "model": "gated pixelcnn 7 layers x 32 channels, first kernel 7, then 3",
                       "cached_seconds": t_cached, "naive_seconds": t_naive,
                       "speedup": t_naive / t_cached, "cpu_share": watch.cpu_share,
                       "target": ">= 50x"})
    if args.target and args.draft:
        result["speculative"] = speculative(args.target, args.draft, args.images, args.draft_tokens)
    emit(result)


if __name__ == "__main__":
    main()
