"""Shared helpers for benchmark scripts: machine description and JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch


def cpu() -> dict[str, Any]:
    """The CPU model and the instruction-set flags that decide reduced-precision speed (speed
    ratios move with them: print them beside every ratio)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16",
              "amx_int8")
    return {"model": model, "flags": [f for f in wanted if f in flags],
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def emit(result: dict[str, Any]) -> None:
    """Print the result as one JSON object on stdout (progress goes to stderr)."""
    json.dump({**result, "machine": machine()}, sys.stdout, indent=2)
    sys.stdout.write("\n")


def steps_per_second(recipe: Path, tmp: Path, overrides: list[str] = ()) -> float:
    """Training steps per second of a recipe, from 40 steps (the first 10 are warm-up)."""
    from pipelines import Pipeline

    run = tmp / f"calib-{recipe.stem}-{len(list(tmp.glob('calib-*')))}"
    pipe = Pipeline.from_recipe(recipe, [*overrides, "train.max_steps=40", "train.eval_every=40",
                                         "train.eval_samples=0", "train.max_seconds=null"])
    pipe.train(run, progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train" and r["step"] > 10]
    return (train[-1]["step"] - train[0]["step"]) / (train[-1]["elapsed_s"] - train[0]["elapsed_s"])


def budget_overrides(recipe: Path, seconds: float, tmp: Path, overrides: list[str] = ()) -> list[str]:
    """Overrides that fit a recipe's training into `seconds`: max_steps from a timed calibration
    run (so warmup + cosine schedule end with the budget), max_seconds as the hard cap."""
    steps = max(1, int(steps_per_second(recipe, tmp, overrides) * seconds))
    return [*overrides, f"train.max_steps={steps}", f"train.max_seconds={seconds}",
            f"train.eval_every={max(1, steps // 10)}", "train.eval_samples=0"]


class Stopwatch:
    """Wall time of a `with` block, and the share of the machine's torch threads this process
    really got meanwhile (the machines are shared: a low share explains a slow run)."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu_share = round((time.process_time() - self._cpu) / (self.wall * torch.get_num_threads()), 3)


class cpu_clock:
    """Within this block the trainer's clock is this process's CPU time (over all its threads),
    so `train.max_seconds` is a CPU budget, and logged `elapsed_s` CPU seconds: on a machine
    shared with other work, a budget of compute rather than of waiting."""

    def __enter__(self) -> cpu_clock:
        import types

        import pipelines.train as train

        self._module, self._saved = train, train.time
        train.time = types.SimpleNamespace(perf_counter=time.process_time)
        return self

    def __exit__(self, *exc: object) -> None:
        self._module.time = self._saved
