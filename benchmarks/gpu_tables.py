"""The decoding tables of issue 18 on a GPU, plus training throughput and model FLOPs utilisation
(MFU) of the 6x6x384 char GPT in bf16. Prints one JSON object; about 3-5 minutes on an H100/H200.

    pip install -c constraints.txt -e ".[bench]"   # transformers, for the HF comparison
    python benchmarks/gpu_tables.py [--quick]

Tables (random weights: speed does not depend on them):
- decode: tokar vs Hugging Face `generate(use_cache=True)`, 6x6x384 GPT, vocabulary 65, fp32 and
  bf16, greedy, 256 new tokens after a 64-token prompt, batch 1 and 16, 3 alternating rounds;
- batch throughput of every prior at batch 1, 16, 64 (benchmarks/batch_throughput.py's models);
- PixelCNN cached vs naive, 16 images of 28x28; WaveNet one second at 8 kHz, batch 1 and 16;
- training: tokens/s of the 6x6x384 char GPT (block 256, batch 64, AdamW, bf16 autocast) and
  MFU = 6 N + 12 L T C FLOPs per token (Chowdhery et al. 2022, appendix B) over the GPU's dense
  bf16 peak (known for A100/H100/H200; null otherwise).
Nothing here is CUDA-only in the library: the same decoding code runs on CPU; this script only
refuses to run without a GPU.
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
from priors import DecodeConfig, generate  # noqa: E402
from priors.gpt import GPT, GPTConfig  # noqa: E402

V, PROMPT, NEW = 65, 64, 256
TRAIN_BLOCK, TRAIN_BATCH = 256, 64
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}


DEVICE = "cuda"  # --device cpu: a smoke test of this script where there is no GPU


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def decode_table(rounds: int, dtype: torch.dtype) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    ours = GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=PROMPT + NEW, bias=True), V,
               Layout.seq()).to(DEVICE).to(dtype).eval()
    cfg = GPT2Config(vocab_size=V, n_positions=PROMPT + NEW, n_embd=384, n_layer=6, n_head=6,
                     bos_token_id=None, eos_token_id=None, pad_token_id=0)
    hf = GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa").to(DEVICE).to(dtype).eval()

    def run_ours(b):
        p = torch.randint(0, V, (b, PROMPT), device=DEVICE)
        return b * NEW / timed(lambda: generate(ours, b, DecodeConfig(max_new_tokens=NEW, greedy=True),
                                                prompt=p))

    @torch.no_grad()
    def run_hf(b):
        p = torch.randint(0, V, (b, PROMPT), device=DEVICE)
        return b * NEW / timed(lambda: hf.generate(input_ids=p, attention_mask=torch.ones_like(p),
                                                   max_new_tokens=NEW, min_new_tokens=NEW,
                                                   do_sample=False, use_cache=True))

    runs = {f"{who}_b{b}": (lambda w=who, b=b: run_ours(b) if w == "ours" else run_hf(b))
            for b in (1, 16) for who in ("ours", "hf")}
    for fn in runs.values():
        fn()
    tps = {k: [] for k in runs}
    for r in range(rounds):
        for k in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            tps[k].append(runs[k]())
    med = {k: round(statistics.median(v), 1) for k, v in tps.items()}
    return {"tokens_per_second_median": med, "ratio_b1": med["ours_b1"] / med["hf_b1"],
            "ratio_b16": med["ours_b16"] / med["hf_b16"]}


def throughput_table(scale: float) -> dict:
    from batch_throughput import BATCHES, priors

    out = {}
    for name, (prior, tokens, cond) in priors().items():
        prior = prior.to(DEVICE).eval()
        tokens = max(8, int(tokens * scale))
        row = {}
        for b in BATCHES:
            labels = torch.full((b,), 3, device=DEVICE) if cond else None
            g = torch.Generator(device=DEVICE).manual_seed(0)
            cfg = DecodeConfig(max_new_tokens=tokens)
            generate(prior, b, DecodeConfig(max_new_tokens=8), cond=labels, generator=g)  # warm-up
            run = lambda p=prior, b=b, c=labels, g=g, cfg=cfg: generate(p, b, cfg, cond=c, generator=g)  # noqa: E731
            row[f"batch_{b}"] = round(b * tokens / timed(run), 1)
        out[name] = {"tokens_per_row": tokens, "tokens_per_second": row}
    return out


@torch.no_grad()
def pixelcnn_table() -> dict:
    from priors.pixelcnn import PixelCNN, PixelCNNConfig

    torch.manual_seed(0)
    m = PixelCNN(PixelCNNConfig(n_layer=7, n_channels=32, first_kernel_size=7, kernel_size=3, n_out=64),
                 2, Layout.grid(28, 28)).to(DEVICE).eval()
    g = torch.Generator(device=DEVICE).manual_seed(0)

    def cached():
        generate(m, 16, DecodeConfig(max_new_tokens=784), generator=g)

    def naive():
        ids = torch.zeros(16, 784, dtype=torch.long, device=DEVICE)
        for t in range(784):
            ids[:, t] = torch.multinomial(torch.softmax(m(ids)[:, t], -1), 1, generator=g)[:, 0]

    cached()
    t_cached, t_naive = min(timed(cached) for _ in range(2)), timed(naive)
    return {"images": 16, "cached_seconds": t_cached, "naive_seconds": t_naive,
            "speedup": t_naive / t_cached}


@torch.no_grad()
def wavenet_table() -> dict:
    from priors.wavenet import WaveNet, WaveNetConfig

    torch.manual_seed(0)
    m = WaveNet(WaveNetConfig(n_layer=10, n_block=2, n_residual=64, n_skip=128, n_classes=10), 256,
                Layout.seq()).to(DEVICE).eval()
    out = {}
    for b in (1, 16):
        cond = torch.full((b,), 3, device=DEVICE)
        g = torch.Generator(device=DEVICE).manual_seed(0)
        generate(m, b, DecodeConfig(max_new_tokens=50), cond=cond, generator=g)
        s = timed(lambda b=b, cond=cond, g=g: generate(m, b, DecodeConfig(max_new_tokens=8000),
                                                       cond=cond, generator=g))
        out[f"batch_{b}"] = {"seconds_for_one_second": s, "aggregate_real_time_factor": b / s}
    return out


def training_table(steps: int, compile_model: bool) -> dict:
    torch.manual_seed(0)
    T, B = TRAIN_BLOCK, TRAIN_BATCH
    model = GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=T), V, Layout.seq()).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    step_fn = torch.compile(model) if compile_model else model
    data = torch.randint(0, V, (B, T), device=DEVICE)

    def train_step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            params = step_fn(data)
            loss = -model.distribution.log_prob(params, data).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        train_step()
    seconds = timed(lambda: [train_step() for _ in range(steps)])
    tokens_per_s = steps * B * T / seconds
    n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    c = model.config
    flops_per_token = 6 * n + 12 * c.n_layer * T * c.n_embd
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else DEVICE
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"tokens_per_second": tokens_per_s, "flops_per_token": flops_per_token,
            "achieved_tflops": tokens_per_s * flops_per_token / 1e12,
            "mfu": tokens_per_s * flops_per_token / peak if peak else None,
            "peak_bf16_flops_assumed": peak, "batch": B, "block": T, "compiled": compile_model}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and tokens (about 2 minutes)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training model")
    ap.add_argument("--device", default="cuda", help="cpu: smoke-test the script, no figures")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("error: gpu_tables.py needs a CUDA GPU; the CPU tables come from decode_speed.py, "
              "batch_throughput.py, pixelcnn_generation.py and wavenet_generation.py.", file=sys.stderr)
        sys.exit(2)
    rounds, scale = (1, 0.25) if args.quick else (3, 1.0)
    result = {"benchmark": "gpu_tables",
              "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else DEVICE}
    for key, fn in (("decode_fp32", lambda: decode_table(rounds, torch.float32)),
                    ("decode_bf16", lambda: decode_table(rounds, torch.bfloat16)),
                    ("batch_throughput", lambda: throughput_table(scale)),
                    ("pixelcnn", pixelcnn_table), ("wavenet", wavenet_table),
                    ("training_bf16", lambda: training_table(20 if args.quick else 50, args.compile))):
        start = time.perf_counter()
        try:
            result[key] = fn()
        except Exception as exc:  # one failing table must not lose the others
            result[key] = {"error": f"{type(exc).__name__}: {exc}"}
        result[key]["wall_seconds"] = round(time.perf_counter() - start, 1)
        print(key, result[key], file=sys.stderr)
    emit(result)


if __name__ == "__main__":
    main()
