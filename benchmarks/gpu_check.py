"""The CUDA paths, checked on a GPU machine: training with bf16 mixed precision, scoring,
decoding with every head kind (a CPU random generator driving sampling on the GPU), the VQ-VAE
stage-1 fit, the heads' integer pmf being the same on the GPU twice, lossless compression coded
and decoded on the GPU, and anomaly detection with the prior there. CI has no GPU; this is
run by hand where one is lent.

    TOKAR_DATA_DIR=DIR python benchmarks/gpu_check.py [--steps 200]

Prints one JSON object: each check's result and timings, or the error it hit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def check(results: dict, name: str, fn) -> None:
    start = time.perf_counter()
    try:
        results[name] = {"ok": True, **fn(), "seconds": round(time.perf_counter() - start, 2)}
    except Exception as exc:  # a report of every check, whichever fails
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                         "trace": traceback.format_exc()[-1500:]}
    print(name, results[name].get("ok"), file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    from pipelines import Pipeline
    from plugins.shared import Layout
    from priors import GPT, DecodeConfig, GPTConfig, generate
    from priors.wavenet import WaveNet, WaveNetConfig

    assert torch.cuda.is_available(), "no CUDA device"
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    tmp = Path(tempfile.mkdtemp())

    def train_bf16():
        pipe = Pipeline.from_recipe(ROOT / "recipes" / "shakespeare" / "char_gpt.yaml", [
            f"train.max_steps={args.steps}", f"train.eval_every={args.steps}", "train.mixed_precision=bf16",
            "train.eval_samples=0", "sample.n=2", "sample.max_new_tokens=50"])
        result = pipe.train(tmp / "char_gpt", progress=False)
        device = next(pipe.prior.parameters()).device
        score = Pipeline.load(tmp / "char_gpt").score(batch_size=256)
        return {"device": str(device), "steps": result.steps, "tokens_per_s": result.tokens_per_second,
                "val_bits_per_char_train_eval": result.val.bits_per_unit,
                "val_bits_per_char_score_cpu_load": score.bits_per_unit}

    def decode_heads():
        out = {}
        g = torch.Generator().manual_seed(0)  # on the CPU, as Pipeline.generate makes it
        for head, layout, vocab in (("categorical", Layout.seq(), 65),
                                    ({"name": "logistic_mixture", "n_mixtures": 5}, Layout.seq(), 256),
                                    ({"name": "gaussian_mixture", "n_mixtures": 4}, Layout.seq(dims=1), 0)):
            prior = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=128, head=head), vocab,
                        layout).cuda().eval()
            tokens = generate(prior, 4, DecodeConfig(max_new_tokens=64), generator=g).tokens
            name = head if isinstance(head, str) else head["name"]
            out[name] = {"shape": list(tokens.shape), "device": str(tokens.device),
                         "finite": bool(torch.isfinite(tokens.float()).all())}
        wave = WaveNet(WaveNetConfig(n_layer=6, head={"name": "gaussian_mixture", "n_mixtures": 4}), 0,
                       Layout.seq(dims=1)).cuda().eval()
        start = time.perf_counter()
        tokens = generate(wave, 16, DecodeConfig(max_new_tokens=2000), generator=g).tokens
        torch.cuda.synchronize()
        out["wavenet_mog_batch16_samples_per_s"] = 16 * 2000 / (time.perf_counter() - start)
        return out

    def pmf_reproducible():
        from plugins.shared import ValueSpace
        from priors.heads import LogisticMixture

        head = LogisticMixture(LogisticMixture.Config(n_mixtures=5), ValueSpace.discrete(256))
        params = torch.randn(512, 15, generator=torch.Generator().manual_seed(1)).cuda()
        a, b = head.quantized_pmf(params), head.quantized_pmf(params.clone())
        cpu = head.quantized_pmf(params.cpu())
        return {"same_twice_on_gpu": bool(torch.equal(a, b)),
                "gpu_equals_cpu": bool(torch.equal(a.cpu(), cpu)),
                "max_abs_count_diff_gpu_cpu": int((a.cpu() - cpu).abs().max())}

    def vqvae_fit():
        pipe = Pipeline.from_recipe(ROOT / "recipes" / "debug" / "vqvae_gpt.yaml",
                                    ["tokenizer.fit.device=auto", "train.max_steps=20"])
        pipe.train(tmp / "vq", progress=False)
        import json

        health = json.loads((tmp / "vq" / "tokenizer_health.json").read_text())
        return {"health": health}

    def compress_on_cuda():
        # the run trained above, its prior on the GPU: a passage coded and decoded there
        text = (Path(__import__("os").environ["TOKAR_DATA_DIR"]) / "tinyshakespeare.txt").read_text()
        passage = text[500_000:520_000]
        pipe = Pipeline.load(tmp / "char_gpt")
        pipe.prior.cuda()
        start = time.perf_counter()
        blob = pipe.compress(passage)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        back = pipe.decompress(blob)
        decode_s = time.perf_counter() - start
        return {"chars": len(passage), "bits_per_char": 8 * len(blob) / len(passage),
                "round_trip_exact": back == passage, "encode_chars_per_s": len(passage) / encode_s,
                "decode_chars_per_s": len(passage) / decode_s}

    def detect_on_cuda():
        pipe = Pipeline.load(tmp / "char_gpt")
        pipe.prior.cuda()
        text = (Path(__import__("os").environ["TOKAR_DATA_DIR"]) / "tinyshakespeare.txt").read_text()
        normal = [text[i : i + 256] for i in range(1_000_000, 1_050_000, 5_000)]
        odd = ["".join(reversed(t)) for t in normal]
        result = pipe.detect(normal + odd, "likelihood", calibration_examples=200)
        flagged = [d.anomalous for d in result.detections]
        return {"normal_flagged": sum(flagged[: len(normal)]), "reversed_flagged": sum(flagged[len(normal):]),
                "n_each": len(normal)}

    check(results, "train_bf16_and_score", train_bf16)
    check(results, "compress_round_trip_on_cuda", compress_on_cuda)
    check(results, "detect_on_cuda", detect_on_cuda)
    check(results, "decode_every_head_kind", decode_heads)
    check(results, "integer_pmf", pmf_reproducible)
    check(results, "vqvae_fit_on_cuda", vqvae_fit)
    emit(results)


if __name__ == "__main__":
    main()
