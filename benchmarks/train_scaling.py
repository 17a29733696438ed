"""Training throughput of recipes/shakespeare/char_gpt.yaml: 1 process vs 2 CPU processes
(torchrun, gloo), and eager vs torch.compile, in one run.

    TOKAR_DATA_DIR=../shared/data python benchmarks/train_scaling.py [--steps 300]

Tokens/s is the median of the per-interval figures the trainer logs (metrics.jsonl, global
tokens over all processes), skipping the first interval (warm-up, compilation). On this 2-core
machine one process uses 2 threads; each of 2 processes uses 1 thread with the same per-process
batch (12), so the global batch doubles. Scaling efficiency = tokens/s with 2 processes / (2 x
tokens/s of 1 process limited to 1 thread).
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
RECIPE = "recipes/shakespeare/char_gpt.yaml"


def run(name: str, tmp: Path, steps: int, launcher: list[str], env: dict, *overrides: str) -> float:
    run_dir = tmp / name
    cmd = [*launcher, "-m", "pipelines.cli.main", "-q", "train", RECIPE, "--run-dir", str(run_dir),
           "--no-progress", f"train.max_steps={steps}", f"train.eval_every={steps}",
           "train.log_every=25", "train.eval_samples=0", "sample.n=1", *overrides]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_s"] for r in rows if r["split"] == "train"][1:]
    print(f"{name}: {statistics.median(tps):,.0f} tokens/s", file=sys.stderr)
    return statistics.median(tps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    one_thread = {**env, "OMP_NUM_THREADS": "1"}
    py = [sys.executable]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29541"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        r = {
            "1_process_2_threads": run("p1", tmp, args.steps, py, env),
            "1_process_1_thread": run("p1t1", tmp, args.steps, py, one_thread),
            "2_processes_1_thread_each": run("p2", tmp, args.steps, torchrun, one_thread),
            "1_process_2_threads_compiled": run("p1c", tmp, args.steps, py, env, "train.compile=true"),
        }
    two, one = r["2_processes_1_thread_each"], r["1_process_2_threads"]
    emit({
        "benchmark": "train_scaling", "recipe": RECIPE, "steps": args.steps,
        "tokens_per_second": r,
        "scaling_efficiency_2_processes": two / (2 * r["1_process_1_thread"]),
        "speedup_2_processes_over_1_process_2_threads": two / one,
        "speedup_compile": r["1_process_2_threads_compiled"] / one,
    })


if __name__ == "__main__":
    main()
