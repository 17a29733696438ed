"""No-regression check against an earlier commit: speed side by side, likelihoods to the digit.

    python benchmarks/regression.py --baseline 002e475 [--rounds 3] [--speed-only]

The baseline commit is checked out in a temporary git worktree; every measurement runs in a fresh
process with PYTHONPATH pointing at one tree or the other, rounds alternating between them, and
medians are compared as ratios (this tree / baseline), so the machine's noise hits both alike.

- `gpt_train_tokens_per_s`: `tokar train` of recipes/shakespeare/char_gpt.yaml (4x4x128, batch
  12 x 64), tokens/s from metrics.jsonl after the first 20 steps;
- `gpt_decode_tokens_per_s`: greedy decoding of 256 tokens at batch 1 after a 64-token prompt,
  6x6x384 char GPT (benchmarks/decode_speed.py's model);
- `pixelcnn_mixture_steps_per_s`: training steps/s of the Fashion-MNIST PixelCNN with the
  logistic mixture head, on random 28x28 images (the data set is not needed for speed), 20 steps;
  decoding and PixelCNN steps are timed in process CPU time when OMP_NUM_THREADS=1 (the machine is
  shared), in wall time otherwise;
- `likelihoods`: fixed-step trainings of the shipped debug recipes (deterministic for a seed),
  then `tokar score` of their validation splits: every figure must agree with the baseline's to
  1e-4 where the model is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Runs inside one tree (cwd and PYTHONPATH = that tree); prints one JSON object.
CHILD = r'''
import json, sys, time, tempfile
from pathlib import Path
import torch
torch.manual_seed(0)
what, tmp = sys.argv[1], Path(sys.argv[2])
# decode and PixelCNN steps are timed on this process's CPU time when it runs one thread (the
# machine is shared: wall time would also measure the neighbours), else on wall time
clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter

def train(recipe, overrides, run):
    from pipelines import Pipeline
    Pipeline.from_recipe(recipe, overrides).train(run, progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"], [r for r in rows if r["split"] == "val"]

if what == "gpt_train":
    rows, _ = train("recipes/shakespeare/char_gpt.yaml",
                    ["train.max_steps=120", "train.eval_every=1000", "train.eval_samples=0",
                     "train.log_every=20", "sample.n=1", "sample.max_new_tokens=1"], tmp / "run")
    late = [r for r in rows if r["step"] > 20]
    tokens = sum(r["tokens_per_s"] for r in late) / len(late)
    print(json.dumps({"value": tokens}))
elif what == "gpt_decode":
    from priors import DecodeConfig, generate
    from priors.gpt import GPT, GPTConfig
    from tokenizers_ar import Layout
    model = GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=320, bias=True), 65,
                Layout.seq()).eval()
    p = torch.randint(0, 65, (1, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        generate(model, 1, DecodeConfig(max_new_tokens=16, greedy=True), prompt=p)  # warm-up
        start = clock()
        generate(model, 1, DecodeConfig(max_new_tokens=256, greedy=True), prompt=p)
    print(json.dumps({"value": 256 / (clock() - start)}))
elif what == "pixelcnn_mixture":
    from pipelines.recipe.loader import load_recipe
    from tokenizers_ar import Layout
    r = load_recipe("recipes/fashion_mnist/pixel_pixelcnn.yaml",
                    ["prior.output=logistic_mixture", "prior.n_classes=0"])
    model = r.prior.cls(r.prior.config, 256, Layout.grid(28, 28))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (r.train.batch_size, 784), generator=torch.Generator().manual_seed(2))
    times = []
    for step in range(22):
        start = clock()
        loss = -model.log_prob(x).mean() / 784
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 2:
            times.append(clock() - start)
    print(json.dumps({"value": len(times) / sum(times)}))
elif what == "likelihoods":
    from pipelines import Pipeline
    out = {}
    for name in sys.argv[3].split(","):
        run = tmp / name
        _, val = train(f"recipes/debug/{name}.yaml", ["train.eval_samples=0"], run)
        score = Pipeline.load(run).score()
        out[name] = {"train_eval_nats_per_token": val[-1]["loss"], "score_bits_per_unit": score.bits_per_unit}
    print(json.dumps({"value": out}))
'''

LIKELIHOOD_RECIPES = ["char_gpt", "char_lstm", "bpe_gpt", "pixel_gpt", "pixel_pixelcnn", "mulaw_wavenet",
                      "mulaw_lstm"]


def measure(tree: Path, what: str, extra: list[str] = ()) -> object:
    env = {**os.environ, "PYTHONPATH": str(tree), "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        env["TOKAR_CACHE_DIR"] = str(Path(tmp) / "cache")
        proc = subprocess.run([sys.executable, "-c", CHILD, what, tmp, *extra], cwd=tree, env=env,
                              capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{what} failed in {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["value"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, help="commit to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--speed-only", action="store_true", help="skip the likelihood reproduction")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tokar-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT,
                   check=True, capture_output=True)
    try:
        speed: dict[str, dict[str, list[float]]] = {}
        for r in range(args.rounds):
            for what in ("gpt_train", "gpt_decode", "pixelcnn_mixture"):
                for label, tree in (("new", ROOT), ("baseline", base))[:: 1 if r % 2 == 0 else -1]:
                    value = measure(tree, what)
                    speed.setdefault(what, {}).setdefault(label, []).append(value)
                    print(f"round {r} {what} {label}: {value:.1f}", file=sys.stderr)
        ratios = {what: {"new_median": statistics.median(v["new"]),
                         "baseline_median": statistics.median(v["baseline"]),
                         "ratio": statistics.median(v["new"]) / statistics.median(v["baseline"])}
                  for what, v in speed.items()}
        if args.speed_only:
            emit({"baseline": args.baseline, "speed": ratios, "rounds": args.rounds,
                  "threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or None})
            return
        names = ",".join(LIKELIHOOD_RECIPES)
        new, old = measure(ROOT, "likelihoods", [names]), measure(base, "likelihoods", [names])
        diffs = {name: {key: abs(new[name][key] - old[name][key]) for key in new[name]}
                 for name in new}
        emit({"baseline": args.baseline, "speed": ratios,
              "likelihoods": {"new": new, "baseline": old, "abs_diff": diffs,
                              "max_abs_diff": max(v for d in diffs.values() for v in d.values())}})
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
