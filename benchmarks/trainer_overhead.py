"""Overhead of tokar's training loop (pipelines.training.trainer.Trainer on Accelerate: progress bar,
logging, clipping, schedule, checkpoint) vs a bare PyTorch loop doing the same optimisation on
the same model and batch shapes (nanoGPT's CPU shakespeare_char model, batch 12 x 64).

    TOKAR_DATA_DIR=../shared/data python benchmarks/trainer_overhead.py [--steps 200 --rounds 3]

Rounds alternate between the two; each round builds a fresh model from the same seed. Target:
tokar's time within 5% of the bare loop's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.data.sources import tokenize  # noqa: E402
from pipelines.training.trainer import Trainer, lr_lambda, make_accelerator, param_groups  # noqa: E402
from priors.likelihood import token_nll  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "shakespeare" / "char_gpt.yaml"


def bare(prior, stream, cfg, steps: int) -> float:
    g = torch.Generator().manual_seed(0)
    data = torch.from_numpy(stream)
    opt = torch.optim.AdamW(param_groups(prior, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    prior.train()
    start = time.perf_counter()
    for _ in range(steps):
        ix = torch.randint(len(data) - 64, (cfg.batch_size,), generator=g)
        ids = torch.stack([data[i : i + 64] for i in ix])
        loss = token_nll(prior, prior, ids).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    return time.perf_counter() - start


def ours(pipe, tokens, cfg, steps: int, tmp: Path, i: int) -> float:
    run_dir = tmp / f"run{i}"
    run_dir.mkdir()
    trainer = Trainer(pipe.build_prior(), tokens["train"], None, cfg, run_dir, "char",
                      make_accelerator(cfg), progress=True)
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pipe = Pipeline.from_recipe(RECIPE, [f"train.max_steps={args.steps}", "train.log_every=50"])
    splits = pipe.recipe.data.cls(pipe.recipe.data.config).load()
    pipe.tokenizer.fit(splits["train"]["example"])
    tokens = tokenize(splits, pipe.tokenizer)
    cfg = pipe.recipe.train
    times = {"tokar_trainer": [], "bare_pytorch_loop": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ["tokar_trainer", "bare_pytorch_loop"][:: 1 if r % 2 == 0 else -1]
            for name in order:
                if name == "tokar_trainer":
                    t = ours(pipe, tokens, cfg, args.steps, Path(tmp), r)
                else:
                    t = bare(pipe.build_prior(), tokens["train"].tokens, cfg, args.steps)
                times[name].append(t)
                print(f"round {r} {name}: {t:.2f}s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    emit({"benchmark": "trainer_overhead", "steps": args.steps, "rounds": args.rounds,
          "seconds": times, "median_seconds": med,
          "overhead": med["tokar_trainer"] / med["bare_pytorch_loop"] - 1,
          "target": "overhead <= 0.05"})


if __name__ == "__main__":
    main()
