"""Helpers of the exact-coder tests (test_exact.py and one file per prior): run a coder over ids,
compare it with its float prior, and run a saved coder in fresh processes under every CPU kernel
set this machine has (ATEN_CPU_CAPABILITY is read once, at import) and with 1 and 2 threads,
hashing what it computes. The checks every coder passes are here; each prior's file keeps what
is specific to it (its small model, its refusals).

Not here: the coders themselves (priors/integer.py, priors/*_exact.py), coding files with them
(tests/pipelines/test_compress_portable.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plugins.errors import CompressionError
from priors import DecodeConfig, generate
from priors.base import Prior
from priors.integer import ExactCoder, load_coder, save_coder

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


def sharpened(model: Prior, gain: float = 4.0) -> Prior:
    """A random model with weights scaled up: peaked, varied pmfs instead of near-uniform ones."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    return model.eval()


def labels(b: int) -> torch.Tensor:
    """Class labels 0, 1, 2, 0, ... for b rows (the conditional test priors have 3 classes)."""
    return torch.arange(b) % 3


def sampled(model: Prior, b: int, T: int) -> torch.Tensor:
    """b sequences of T tokens drawn from the float prior (its own typical data), labels(b)."""
    return generate(model, b, DecodeConfig(max_new_tokens=T), cond=labels(b),
                    generator=torch.Generator().manual_seed(1)).tokens


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
    # MKL picks its own kernels (the float64 products run there): switch them alongside
    mkl = {"default": "SSE4_2", "avx2": "AVX2", "avx512": "AVX512"}
    # passive OpenMP waits: threads spinning at a barrier on a loaded 2-core machine make a
    # 2-thread run of these tiny ops take tens of seconds instead of a fraction of one
    env = {**os.environ, "OMP_WAIT_POLICY": "passive",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    caps = cpu_capabilities()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(folder), target], cwd=ROOT,
                              env={**env, "ATEN_CPU_CAPABILITY": cap,
                                   "MKL_ENABLE_INSTRUCTIONS": mkl[cap]},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cap in caps]
    results = {}
    for cap, proc in zip(caps, procs, strict=True):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        lines = out.strip().splitlines()[-4:]
        assert lines[0] == cap.upper(), lines  # the kernel set really was switched
        results[cap] = lines[1:]
    return results



def assert_bit_identical_across_kernels(prior: Prior, ids: torch.Tensor, cond: torch.Tensor | None,
                                        folder: Path) -> None:
    """Under every kernel set this CPU has (two at least) and with 1 and 2 threads: the same
    export and the same pmfs, hash for hash."""
    results = hashes_per_kernel(prior, ids, cond, folder)
    assert len(results) >= 2
    first = next(iter(results.values()))
    assert all(r == first for r in results.values()), results
    assert first[1] == first[2]  # 1 vs 2 threads


def float_pmfs(model: Prior, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """The float path's pmfs (B, T, V): `quantized_pmf` of the model's parameters."""
    with torch.inference_mode():
        return model.distribution.quantized_pmf(model(ids, cond))


def assert_valid_and_close_to_float_step(model: Prior, ids: torch.Tensor, cond: torch.Tensor | None,
                                         peak: float) -> ExactCoder:
    """The exact pmfs of ids are int64, sum to 2**16, are never 0, some above `peak` times the
    uniform share (the test has teeth), code within 0.5% of the float path's pmfs and are within
    0.01 of them in total variation. 0.5%: the design's budget is ~1% of bits per token and
    quantization noise measures ~0.001%, so a miswired layer (which moves it by whole percents)
    fails while noise never does. Returns the coder."""
    coder = model.exact_coder()
    pmf = run_coder(coder, ids, cond)
    V = model.vocab_size
    assert pmf.dtype == torch.int64 and pmf.shape == (*ids.shape, V)
    assert bool((pmf.sum(-1) == 2**16).all()) and int(pmf.min()) >= 1
    assert int(pmf.max()) > peak * 2**16 / V
    ref = float_pmfs(model, ids, cond)
    bits = lambda p: float(-torch.log2(p.gather(-1, ids[..., None]).double() / 2**16).sum())  # noqa: E731
    assert math.isclose(bits(pmf), bits(ref), rel_tol=5e-3), (bits(pmf), bits(ref))
    assert float((pmf - ref).abs().sum(-1).max()) / 2**17 < 0.01
    return coder


def assert_close_to_float(model: Prior, vocab: int, cond: torch.Tensor | None = None,
                          T: int = 48) -> None:
    """The exact pmfs against the float model's `quantized_pmf`, on random ids: cross-entropy
    within 1% and log-masses within 0.02 nats on average. 12-bit weights per row and 12
    fractional bits of activations move logits by about 1e-3 relative, the tables (grid 2**-10)
    by ~5e-4 absolute: far below both bounds, which a wrong wiring (a missing bias, the wrong
    gate order, a layer skipped) exceeds many times over."""
    B = 1 if cond is None else cond.numel()
    ids = torch.randint(0, vocab, (max(B, 6) if cond is None else B, T),
                        generator=torch.Generator().manual_seed(3))
    exact = run_coder(model.exact_coder(), ids, cond).double()
    ref = float_pmfs(model, ids, cond).double()
    ce = lambda p: float(-torch.log(p.gather(-1, ids[..., None]) / 2**16).mean())  # noqa: E731
    assert abs(ce(exact) - ce(ref)) < 0.01 * ce(ref)
    assert float((exact.log() - ref.log()).abs().mean()) < 0.02


def assert_round_trip(coder: ExactCoder, ids: torch.Tensor, cond: torch.Tensor | None,
                      folder: Path) -> None:
    """Saved and loaded without the float prior (two files, integer tensors only), the coder
    gives the same pmfs."""
    save_coder(coder, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["coder.safetensors", "config.json"]
    json.loads((folder / "config.json").read_text())
    loaded = load_coder(folder, type(coder))
    assert all(not t.is_floating_point() for t in coder.tensors().values())
    assert torch.equal(run_coder(coder, ids, cond), run_coder(loaded, ids, cond))


def assert_rows_independent(coder: ExactCoder, ids: torch.Tensor, cond: torch.Tensor | None) -> None:
    """Exact sums: a block coded alone gets the pmfs it gets inside any batch (the float path
    needs the same batch composition on both sides)."""
    batch = run_coder(coder, ids, cond)
    alone = run_coder(coder, ids[3:4], None if cond is None else cond[3:4])
    assert torch.equal(alone[0], batch[3])


def assert_needs_and_uses_labels(coder: ExactCoder, ids: torch.Tensor) -> None:
    """A class-conditional coder refuses to start without labels, and its pmfs of two rows of
    ids depend on theirs."""
    with pytest.raises(CompressionError, match="class-conditional"):
        coder.init_state(2)
    assert not torch.equal(run_coder(coder, ids, torch.tensor([0, 1])),
                           run_coder(coder, ids, torch.tensor([2, 2])))
