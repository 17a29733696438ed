"""Training throughput of tokar's `gpt` prior vs Hugging Face transformers' GPT2LMHeadModel of the
same size, batch and sequence length, on this machine, in one run.

    python benchmarks/train_throughput.py [--rounds 5] [--steps 20]

Both models: same layers/heads/width/context/vocabulary, biases on (GPT-2 has them), tied
embeddings, no dropout, fp32, PyTorch's SDPA attention, torch.optim.AdamW. One "step" is forward,
cross-entropy, backward, optimizer step, on the same random batches. Rounds alternate between the
two models so that machine noise hits both alike; the ratio is of the medians.
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

from priors.gpt import GPT, GPTConfig  # noqa: E402
from priors.likelihood import token_nll  # noqa: E402
from tokenizers_ar import Layout  # noqa: E402

CONFIGS = {
    # nanoGPT's CPU shakespeare_char configuration
    "4x4x128_ctx64_b12": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12),
    # nanoGPT's GPU shakespeare_char model size, at a CPU-sized batch
    "6x6x384_ctx256_b4": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=4),
}
VOCAB = 65


def ours(c):
    return GPT(GPTConfig(n_layer=c["n_layer"], n_head=c["n_head"], n_embd=c["n_embd"],
                         block_size=c["block_size"], bias=True), VOCAB, Layout.seq())


def hf(c):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_positions=c["block_size"], n_embd=c["n_embd"],
                     n_layer=c["n_layer"], n_head=c["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=None,
                     eos_token_id=None)
    return GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa")


def ours_loss(model, ids):
    return token_nll(model, model, ids).mean()


def hf_loss(model, ids):
    return model(input_ids=ids, labels=ids).loss


def run(model, loss_fn, batches, steps):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for i in range(steps):
        ids = batches[i % len(batches)]
        loss = loss_fn(model, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batches[0].numel() / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    results = {}
    for name, c in CONFIGS.items():
        torch.manual_seed(0)
        batches = [torch.randint(0, VOCAB, (c["batch"], c["block_size"])) for _ in range(8)]
        models = {"tokar_gpt": (ours(c), ours_loss), "hf_gpt2": (hf(c), hf_loss)}
        params = {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in models.items()}
        for m, fn in models.values():  # warm-up
            run(m, fn, batches, 3)
        tps = {k: [] for k in models}
        for r in range(args.rounds):
            for k, (m, fn) in (models.items() if r % 2 == 0 else reversed(models.items())):
                tps[k].append(run(m, fn, batches, args.steps))
            print(f"{name} round {r}: " + ", ".join(f"{k} {v[-1]:,.0f} tok/s" for k, v in tps.items()),
                  file=sys.stderr)
        med = {k: statistics.median(v) for k, v in tps.items()}
        results[name] = {
            "parameters": params,
            "hf_attention": models["hf_gpt2"][0].config._attn_implementation,
            "tokens_per_second_median": med,
            "tokens_per_second_all": tps,
            "ratio_tokar_over_hf": med["tokar_gpt"] / med["hf_gpt2"],
        }
    emit({"benchmark": "train_throughput", "rounds": args.rounds, "steps_per_round": args.steps,
          "target": "ratio >= 1.0", "results": results})


if __name__ == "__main__":
    main()
