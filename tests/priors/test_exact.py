"""Integer-exact coders (priors/integer.py): the pmf contract, bit-identity across CPU kernel sets
and thread counts, save/load without the float prior, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plugins.errors import CompressionError
from priors import GPT, LSTM, GPTConfig, LSTMConfig
from priors.gpt_exact import GPTExactCoder
from priors.integer import Table, exp_table, load_coder, save_coder, softmax_pmf
from priors.lstm_exact import LSTMExactCoder
from priors.made import MADE, MADEConfig
from priors.rnn import RNN, RNNConfig
from tokenizers_ar import Layout

ROOT = Path(__file__).resolve().parents[2]
V = 11


def sharpened(model, gain: float = 4.0):
    """A random model with weights scaled up: peaked, varied pmfs instead of near-uniform ones."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    return model.eval()


def small(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    if name == "gpt":
        return sharpened(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, **kw), V,
                             Layout.seq()))
    if name == "lstm":
        return sharpened(LSTM(LSTMConfig(n_layer=2, n_embd=16, n_hidden=32, **kw), V, Layout.seq()))
    return sharpened(RNN(RNNConfig(n_layer=2, n_embd=16, n_hidden=32, **kw), V, Layout.seq()))


def run(coder, ids: torch.Tensor, cond=None) -> torch.Tensor:
    """pmfs (B, T, V) of every position of ids (B, T): init_state's, then one per step."""
    pmf, state = coder.init_state(ids.size(0), cond)
    out = [pmf]
    for t in range(ids.size(1) - 1):
        pmf, state = coder.step(state, ids[:, t])
        out.append(pmf)
    return torch.stack(out, 1)


@pytest.mark.parametrize("name", ["gpt", "lstm", "rnn"])
def test_pmf_is_int64_sums_to_2_16_and_never_zero(name):
    coder = small(name).exact_coder()
    ids = torch.randint(0, V, (5, 30), generator=torch.Generator().manual_seed(1))
    pmf = run(coder, ids)
    assert pmf.dtype == torch.int64 and pmf.shape == (5, 30, V)
    assert bool((pmf.sum(-1) == 2**16).all()) and int(pmf.min()) >= 1
    assert int(pmf.max()) > 2 * 2**16 // V  # sharpened: far from uniform


def test_softmax_pmf_gives_the_remainder_to_the_first_maximum():
    exp = exp_table(24, frac=12)
    z = torch.tensor([[0.0, 4096.0, 4096.0, -40960.0]], dtype=torch.float64)  # logits 0, 1, 1, -10
    pmf = softmax_pmf(z, exp)
    assert int(pmf.sum()) == 2**16 and int(pmf[0, 3]) == 1
    assert int(pmf[0, 1]) > int(pmf[0, 2])  # equal shares, the floors' remainder to index 1


def test_tables_are_the_functions():
    x = torch.linspace(-6, 6, 501, dtype=torch.float64)
    xq = torch.round(x * 2**12)
    for fn, ref in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
                    ("normal_cdf", lambda t: 0.5 * (1 + torch.erf(t / 2**0.5)))):
        table = Table.build(fn, -8.0, 8.0, frac=12)
        # one grid step (2**-10) of the steepest slope (1), halved by rounding to the grid
        assert float((table(xq) / 2**16 - ref(x)).abs().max()) < 6e-4


def test_save_load_round_trip_needs_no_float_prior(tmp_path):
    for name, cls in (("gpt", GPTExactCoder), ("lstm", LSTMExactCoder)):
        coder = small(name, n_classes=3).exact_coder()
        save_coder(coder, tmp_path / name)
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["coder.safetensors",
                                                                       "config.json"]
        json.loads((tmp_path / name / "config.json").read_text())
        loaded = load_coder(tmp_path / name, cls)
        assert all(not t.is_floating_point() for t in coder.tensors().values())
        ids = torch.randint(0, V, (4, 20), generator=torch.Generator().manual_seed(2))
        cond = torch.tensor([0, 1, 2, 1])
        assert torch.equal(run(coder, ids, cond), run(loaded, ids, cond))


def test_priors_and_heads_without_a_coder_refuse_in_one_line():
    made = MADE(MADEConfig(n_hidden=8), 2, Layout.grid(2, 2))
    with pytest.raises(CompressionError, match="no portable") as info:
        made.exact_coder()
    assert "\n" not in str(info.value) and "--no-portable" in str(info.value)
    mixture = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8,
                            head="logistic_mixture"), 16, Layout.seq())
    with pytest.raises(CompressionError, match="categorical and bernoulli") as info:
        mixture.exact_coder()
    assert "\n" not in str(info.value)


# -- bit-identity across machines' kernels ---------------------------------------------------------
WORKER = r"""
import hashlib, sys, torch
from priors import GPT, LSTM
from priors.gpt_exact import GPTExactCoder
from priors.integer import load_coder
from priors.lstm_exact import LSTMExactCoder
folder, steps, short = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ids = torch.randint(0, 65, (16, steps), generator=torch.Generator().manual_seed(1))
lines = [torch.backends.cpu.get_cpu_capability()]
for name, prior_cls, coder_cls in (("gpt", GPT, GPTExactCoder), ("lstm", LSTM, LSTMExactCoder)):
    # the export itself is deterministic too: decimal tables, correctly rounded quantization
    exported = prior_cls.from_pretrained(f"{folder}/{name}_prior").exact_coder()
    digest = hashlib.sha256()
    for key, t in sorted(exported.tensors().items()):
        digest.update(key.encode() + t.numpy().tobytes())
    lines.append(f"{name} export {digest.hexdigest()}")
    coder = load_coder(f"{folder}/{name}_coder", coder_cls)
    # 1 thread: every step; 2 threads: the first `short` (a loaded 2-core machine makes
    # multithreaded BLAS calls of this size slow); each digest covers that many steps
    for threads, n in ((1, steps), (2, short)):
        torch.set_num_threads(threads)
        digest, prefix = hashlib.sha256(), hashlib.sha256()
        pmf, state = coder.init_state(16)
        for t in range(n):
            for d in (digest, prefix) if t < short else (digest,):
                d.update(pmf.numpy().tobytes())
            if t < n - 1:
                pmf, state = coder.step(state, ids[:, t])
        lines.append(f"{name} {threads} threads: {prefix.hexdigest()} {digest.hexdigest()}")
print("\n".join(lines))
"""


def cpu_capabilities() -> list[str]:
    flags = set()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return ["default"] + [c for c, f in (("avx2", "avx2"), ("avx512", "avx512f")) if f in flags]


def test_pmfs_are_bit_identical_across_cpu_kernels_and_threads(tmp_path):
    """The same saved coder, run under every ATEN_CPU_CAPABILITY this CPU has and with 1 and 2
    threads, hashes its pmfs alike (the float path's pmfs differ between kernel sets). The
    float models are made here once and saved, since even torch.randn differs between kernel
    sets."""
    torch.manual_seed(0)
    gpt = sharpened(GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=256), 65, Layout.seq()))
    lstm = sharpened(LSTM(LSTMConfig(n_layer=2, n_embd=32, n_hidden=64), 65, Layout.seq()))
    for name, model in (("gpt", gpt), ("lstm", lstm)):
        model.save(tmp_path / f"{name}_prior")
        save_coder(model.exact_coder(), tmp_path / f"{name}_coder")
    caps = cpu_capabilities()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), "200", "40"], cwd=ROOT,
                              env={**env, "ATEN_CPU_CAPABILITY": cap}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cap in caps]
    results = []
    for cap, proc in zip(caps, procs, strict=True):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        lines = out.strip().splitlines()[-7:]
        assert lines[0] == cap.upper()  # the kernel set really was switched
        results.append(lines[1:])
    assert len(caps) >= 2 and all(r == results[0] for r in results), dict(zip(caps, results, strict=True))
    for one, two in ((1, 2), (4, 5)):  # gpt, lstm: the 2-thread digest of the first steps
        assert results[0][two].split()[-2] == results[0][one].split()[-2]
