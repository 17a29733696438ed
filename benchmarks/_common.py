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

        import pipelines.training.trainer as train

        self._module, self._saved = train, train.time
        train.time = types.SimpleNamespace(perf_counter=time.process_time)
        return self

    def __exit__(self, *exc: object) -> None:
        self._module.time = self._saved


def subsample(ids: list[str], examples: list, n: int, seed: int) -> tuple[list[str], list]:
    """A uniform subsample of n (ids, examples), in their original order (never a prefix)."""
    import numpy as np

    keep = np.arange(len(ids)) if n >= len(ids) else \
        np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
    return [ids[i] for i in keep], [examples[i] for i in keep]


def ood_table(pipe: Any, in_set: tuple[list[str], list], ood_sets: dict[str, tuple[list[str], list]],
              background: Any, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """AUROC, AUPRC, FPR at 95% TPR, detection rate at the calibrated 5% threshold and counts of
    every detector (pipelines/detection/evaluate.py) for each OOD set against the same in-distribution
    set; each evaluation's time goes into `info`. Returns the table and the last report's dict."""
    from pipelines.detection.evaluate import evaluate

    results: dict[str, Any] = {"auroc": {}, "auprc": {}, "fpr_at_95_tpr": {},
                               "detection_rate_at_5pct_fpr": {}, "n": {}}
    r: dict[str, Any] = {}
    for name, (ids, examples) in ood_sets.items():
        with Stopwatch() as sw:
            report = evaluate(pipe, in_set[1], examples, in_ids=in_set[0], ood_ids=ids,
                              background=background, group_size=5)
        r = report.to_dict()
        for key, value in (("auroc", r["auroc"]), ("auprc", r["auprc"]),
                           ("fpr_at_95_tpr", r["fpr_at_95_tpr"]),
                           ("detection_rate_at_5pct_fpr", r["tpr"]), ("n", r["n"])):
            results[key][name] = value
        info[f"eval_{name}"] = {"seconds": round(sw.wall, 1), "cpu_share": sw.cpu_share}
    return results, r


def draft_runs(specs: list[str], default_tokens: int) -> dict[str, tuple[str, int]]:
    """`--draft` values, RUN or RUN@K (K draft tokens per round, else `default_tokens`), as
    {name: (run directory, tokens per round)}; the name is the run's folder name, @K kept."""
    out = {}
    for spec in specs:
        run, _, k = spec.partition("@")
        out[Path(run).name + (f"@{k}" if k else "")] = (run, int(k or default_tokens))
    return out
