"""Helpers of the exact-coder tests: run a saved coder in fresh processes under every CPU kernel
set this machine has (ATEN_CPU_CAPABILITY is read once, at import) and with 1 and 2 threads,
and hash what it computes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from priors.base import Prior
from priors.integer import ExactCoder, save_coder

ROOT = Path(__file__).resolve().parents[2]

# argv: folder, "module:PriorClass". The folder holds the float prior (prior/), its saved coder
# (coder/) and the inputs (inputs.pt: ids (B, T) and cond or None).
WORKER = r"""
import hashlib, importlib, sys, torch
from priors.integer import load_coder
from tests.priors.exact_kernels import run_coder
folder, target = sys.argv[1], sys.argv[2]
module, name = target.split(":")
prior_cls = getattr(importlib.import_module(module), name)
inputs = torch.load(f"{folder}/inputs.pt")
lines = [torch.backends.cpu.get_cpu_capability()]
exported = prior_cls.from_pretrained(f"{folder}/prior").exact_coder()  # the export: deterministic too
digest = hashlib.sha256()
for key, t in sorted(exported.tensors().items()):
    digest.update(key.encode() + t.numpy().tobytes())
lines.append(f"export {digest.hexdigest()}")
coder = load_coder(f"{folder}/coder", prior_cls.exact_coder_class)
for threads in (1, 2):
    torch.set_num_threads(threads)
    pmfs = run_coder(coder, inputs["ids"], inputs["cond"])
    lines.append(f"pmfs {hashlib.sha256(pmfs.numpy().tobytes()).hexdigest()}")
print("\n".join(lines))
"""


def run_coder(coder: ExactCoder, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """pmfs (B, T, V) of every position of ids (B, T): init_state's, then one per step."""
    pmf, state = coder.init_state(ids.size(0), cond)
    out = [pmf]
    for t in range(ids.size(1) - 1):
        pmf, state = coder.step(state, ids[:, t])
        out.append(pmf)
    return torch.stack(out, 1)


def cpu_capabilities() -> list[str]:
    """The ATEN_CPU_CAPABILITY values this CPU can run: default, and avx2 / avx512 by its flags."""
    flags: set[str] = set()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return ["default"] + [c for c, f in (("avx2", "avx2"), ("avx512", "avx512f")) if f in flags]


def hashes_per_kernel(prior: Prior, ids: torch.Tensor, cond: torch.Tensor | None,
                      folder: Path) -> dict[str, list[str]]:
    """Save `prior`, its coder and the inputs in `folder`, then per kernel set (in parallel
    processes): [hash of a fresh export, hash of the pmfs with 1 thread, with 2 threads]. The
    float prior is saved rather than re-made in each process: even torch.randn differs between
    kernel sets."""
    prior.save(folder / "prior")
    save_coder(prior.exact_coder(), folder / "coder")
    torch.save({"ids": ids, "cond": cond}, folder / "inputs.pt")
    target = f"{type(prior).__module__}:{type(prior).__name__}"
    # passive OpenMP waits: threads spinning at a barrier on a loaded 2-core machine make a
    # 2-thread run of these tiny ops take tens of seconds instead of a fraction of one
    env = {**os.environ, "OMP_WAIT_POLICY": "passive",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    caps = cpu_capabilities()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(folder), target], cwd=ROOT,
                              env={**env, "ATEN_CPU_CAPABILITY": cap}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cap in caps]
    results = {}
    for cap, proc in zip(caps, procs, strict=True):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        lines = out.strip().splitlines()[-4:]
        assert lines[0] == cap.upper(), lines  # the kernel set really was switched
        results[cap] = lines[1:]
    return results

