"""Decoding speed: tokar's cached decoding vs Hugging Face `GPT2LMHeadModel.generate(use_cache=True)`,
cached vs full recompute, and reduced-precision weights, on one machine in one run.

    python benchmarks/decode_speed.py [--rounds 3]

Models: 6 layers, 6 heads, 384 wide, vocabulary 65, fp32, random weights (speed does not depend
on them), the same dimensions in both libraries. Greedy decoding of 256 new tokens after a
64-token prompt, batch 1 and 16; rounds alternate between the methods, medians reported.
Batch-1 decoding is bound by memory bandwidth: every token reads every weight once, so the
ceiling is bandwidth / weight bytes. Peak memory: each method once more in a fresh process
(its own VmHWM, which includes the ~300 MiB of importing torch and transformers).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, cpu, emit  # noqa: E402

from priors import DecodeConfig, generate  # noqa: E402
from priors.gpt import GPT, GPTConfig  # noqa: E402
from priors.quantize import to_precision  # noqa: E402
from tokenizers_ar import Layout  # noqa: E402

V, PROMPT, NEW = 65, 64, 256
DIMS = dict(n_layer=6, n_head=6, n_embd=384)


def ours(block_size: int = PROMPT + NEW) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**DIMS, block_size=block_size, bias=True), V, Layout.seq()).eval()


def hf():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=V, n_positions=PROMPT + NEW, n_embd=384, n_layer=6, n_head=6,
                     bos_token_id=None, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    return GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa").eval()


def prompt(batch: int) -> torch.Tensor:
    return torch.randint(0, V, (batch, PROMPT), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def run_ours(model, batch: int, new: int = NEW) -> float:
    p = prompt(batch)
    start = time.perf_counter()
    out = generate(model, batch, DecodeConfig(max_new_tokens=new, greedy=True), prompt=p)
    assert out.tokens.shape == (batch, new)
    return batch * new / (time.perf_counter() - start)


@torch.no_grad()
def run_hf(model, batch: int) -> float:
    p = prompt(batch)
    start = time.perf_counter()
    out = model.generate(input_ids=p, attention_mask=torch.ones_like(p), max_new_tokens=NEW,
                         min_new_tokens=NEW, do_sample=False, use_cache=True)
    assert out.shape == (batch, PROMPT + NEW)
    return batch * NEW / (time.perf_counter() - start)


@torch.no_grad()
def run_recompute(model, new: int) -> float:
    """No cache: a full forward pass over the whole sequence for every new token."""
    ids = torch.empty(1, 0, dtype=torch.long)
    start = time.perf_counter()
    for _ in range(new):
        x = torch.cat([ids, ids[:, :1] if ids.size(1) else torch.zeros(1, 1, dtype=torch.long)], 1)
        nxt = model(x)[:, -1].argmax(-1, keepdim=True)  # last position = next-token logits
        ids = torch.cat([ids, nxt], 1)
    return new / (time.perf_counter() - start)


def bandwidth_gbps() -> float:
    """Copy bandwidth (read + write) of a 512 MiB tensor, best of 3."""
    a = torch.empty(128 * 1024 * 1024, dtype=torch.float32).fill_(1)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        b = a.clone()
        best = max(best, 2 * a.numel() * 4 / (time.perf_counter() - start) / 1e9)
        del b
    return best


METHODS = {
    "ours_b1": lambda: run_ours(ours(), 1),
    "ours_b16": lambda: run_ours(ours(), 16),
    "hf_b1": lambda: run_hf(hf(), 1),
    "hf_b16": lambda: run_hf(hf(), 16),
    "ours_b1_bf16": lambda: run_ours(to_precision(ours(), "bf16"), 1),
    "ours_b1_int8": lambda: run_ours(to_precision(ours(), "int8"), 1),
}


def _child(name, queue):
    METHODS[name]()
    # VmHWM belongs to this process's own address space; ru_maxrss would carry the parent's
    # high-water mark across fork + exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            queue.put(int(line.split()[1]) / 1024)
            return
    queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_mib(name: str) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory part")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory part")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_only:
        emit({"benchmark": "decode_speed_memory",
              "peak_rss_mib": {name: peak_mib(name) for name in METHODS}})
        return
    models = {"ours": ours(), "hf": hf(), "ours_bf16": to_precision(ours(), "bf16"),
              "ours_int8": to_precision(ours(), "int8")}
    runs = {
        "ours_b1": lambda: run_ours(models["ours"], 1),
        "hf_b1": lambda: run_hf(models["hf"], 1),
        "ours_b16": lambda: run_ours(models["ours"], 16),
        "hf_b16": lambda: run_hf(models["hf"], 16),
        "ours_b1_bf16": lambda: run_ours(models["ours_bf16"], 1),
        "ours_b1_int8": lambda: run_ours(models["ours_int8"], 1),
    }
    for fn in runs.values():  # warm-up
        fn()
    tps = {k: [] for k in runs}
    watch = Stopwatch().__enter__()
    for r in range(args.rounds):
        for name in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            tps[name].append(runs[name]())
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in tps.items()), file=sys.stderr)
    watch.__exit__(None, None, None)
    med = {k: statistics.median(v) for k, v in tps.items()}

    # cached vs full recompute at 512 generated tokens (one run each: the recompute is slow)
    long_model = ours(block_size=513)
    cached_512 = run_ours(long_model, 1, new=512)
    recompute_512 = run_recompute(long_model, 512)

    weight_bytes = sum(p.numel() * p.element_size() for p in models["ours"].parameters())
    bw = bandwidth_gbps()
    emit({
        "benchmark": "decode_speed",
        "setup": "6x6x384 GPT, vocab 65, fp32, greedy, 256 new tokens after a 64-token prompt",
        "rounds": args.rounds,
        "cpu": cpu(),
        "cpu_share_of_timed_rounds": watch.cpu_share,
        "tokens_per_second_median": med,
        "tokens_per_second_all": tps,
        "ratio_ours_over_hf_b1": med["ours_b1"] / med["hf_b1"],
        "ratio_ours_over_hf_b16": med["ours_b16"] / med["hf_b16"],
        "weight_bytes_fp32": weight_bytes,
        "bandwidth_ceiling_tokens_per_second_at_34GBps": 34e9 / weight_bytes,
        "fraction_of_34GBps_ceiling_b1": med["ours_b1"] / (34e9 / weight_bytes),
        "measured_copy_bandwidth_GBps": bw,
        "speedup_bf16_over_fp32_b1": med["ours_b1_bf16"] / med["ours_b1"],
        "speedup_int8_over_fp32_b1": med["ours_b1_int8"] / med["ours_b1"],
        "cached_vs_recompute_512": {"cached_tokens_per_second": cached_512,
                                    "recompute_tokens_per_second": recompute_512,
                                    "speedup": cached_512 / recompute_512},
        "peak_rss_mib": None if args.no_memory else {name: peak_mib(name) for name in METHODS},
        "targets": {"ours/hf at batch 1": ">= 2.0", "ours/hf at batch 16": ">= 1.5",
                    "cached/recompute at 512": ">= 5"},
    })


if __name__ == "__main__":
    main()
