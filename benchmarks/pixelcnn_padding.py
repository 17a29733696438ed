"""PixelCNN training step before and after taking the padding and cropping copies out, side by side.

    python benchmarks/pixelcnn_padding.py [--baseline 830eb9d] [--rounds 8] [--steps 3]

The baseline's priors/pixelcnn.py is read from git (`git show COMMIT:priors/pixelcnn.py`) and
imported next to this tree's; both models get the same weights (the state dicts are the same)
and their outputs are compared. Then rounds alternate between them: `--steps` training steps
(forward, loss, backward, AdamW step) of the binarized-MNIST recipe's model (7 layers, 32
channels, 7x7 first layer, batch 64 of random 28x28 binary images). Steps per second are
reported on process CPU time (the machine is shared: wall time mostly measures the neighbours)
and on wall time, medians over rounds, with the ratio after / before; and a profile of each
gives the share of time in copies and fills (aten::copy_, aten::fill_).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from plugins.shared import Layout  # noqa: E402
from priors import pixelcnn as current  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def baseline_module(commit: str):
    source = subprocess.run(["git", "show", f"{commit}:priors/pixelcnn.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "pixelcnn_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pixelcnn_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pixelcnn_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def build(module, state=None):
    torch.manual_seed(0)
    config = module.PixelCNNConfig(n_layer=7, n_channels=32, first_kernel_size=7, kernel_size=3, n_out=64)
    model = module.PixelCNN(config, 2, Layout.grid(28, 28))
    if state is not None:
        model.load_state_dict(state)
    return model, torch.optim.AdamW(model.parameters(), 1e-3)


def train_step(model, opt, x) -> None:
    loss = model.loss(x)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def copy_share(model, opt, x) -> float:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, opt, x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    copies = sum(e.self_cpu_time_total for e in events if e.key in ("aten::copy_", "aten::fill_"))
    return round(copies / total, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="830eb9d")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    old = baseline_module(args.baseline)
    before, opt_before = build(old)
    after, opt_after = build(current, before.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (64, 784), generator=g)
    with torch.no_grad():
        max_diff = (before(x) - after(x)).abs().max().item()
    models = {"before": (before, opt_before), "after": (after, opt_after)}
    for m, o in models.values():  # warm-up
        train_step(m, o, x)
    cpu = {k: [] for k in models}
    wall = {k: [] for k in models}
    for _ in range(args.rounds):
        for name, (m, o) in models.items():
            w, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                train_step(m, o, x)
            cpu[name].append(args.steps / (time.process_time() - c))
            wall[name].append(args.steps / (time.perf_counter() - w))
    med = {k: statistics.median(v) for k, v in cpu.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    emit({
        "benchmark": "pixelcnn_padding", "baseline": args.baseline,
        "model": "binarized MNIST recipe: 7 layers x 32 channels, 7x7 first layer, batch 64",
        "max_abs_output_diff": max_diff,
        "steps_per_cpu_second": med, "ratio_cpu": med["after"] / med["before"],
        "steps_per_wall_second": med_wall, "ratio_wall": med_wall["after"] / med_wall["before"],
        "rounds": args.rounds, "steps_per_round": args.steps,
        "copy_fill_share": {k: copy_share(m, o, x) for k, (m, o) in models.items()},
        "threads": torch.get_num_threads(),
    })


if __name__ == "__main__":
    main()
