"""Integer-exact coders (priors/integer.py): the pmf contract, bit-identity across CPU kernel sets
and thread counts, save/load without the float prior, refusals."""

from __future__ import annotations

import pytest
import torch

from plugins.errors import CompressionError
from priors import GPT, LSTM, GPTConfig, LSTMConfig
from priors.integer import Table, exp_table, softmax_pmf
from priors.made import MADE, MADEConfig
from priors.rnn import RNN, RNNConfig
from tests.priors.exact_kernels import (
    assert_bit_identical_across_kernels,
    assert_round_trip,
    run_coder,
    sharpened,
)
from tokenizers_ar import Layout

V = 11


def small(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    if name == "gpt":
        return sharpened(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, **kw), V,
                             Layout.seq()))
    if name == "lstm":
        return sharpened(LSTM(LSTMConfig(n_layer=2, n_embd=16, n_hidden=32, **kw), V, Layout.seq()))
    return sharpened(RNN(RNNConfig(n_layer=2, n_embd=16, n_hidden=32, **kw), V, Layout.seq()))


@pytest.mark.parametrize("name", ["gpt", "lstm", "rnn"])
def test_pmf_is_int64_sums_to_2_16_and_never_zero(name):
    coder = small(name).exact_coder()
    ids = torch.randint(0, V, (5, 30), generator=torch.Generator().manual_seed(1))
    pmf = run_coder(coder, ids)
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
    ids = torch.randint(0, V, (4, 20), generator=torch.Generator().manual_seed(2))
    for name in ("gpt", "lstm"):
        assert_round_trip(small(name, n_classes=3).exact_coder(), ids, torch.tensor([0, 1, 2, 1]),
                          tmp_path / name)


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


def test_pmfs_are_bit_identical_across_cpu_kernels_and_threads(tmp_path):
    """The same saved coder, run under every ATEN_CPU_CAPABILITY this CPU has (and MKL kernel
    set) and with 1 and 2 threads, hashes its export and its pmfs alike over 200 steps (the
    float path's pmfs differ between kernel sets)."""
    torch.manual_seed(0)
    gpt = sharpened(GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=256), 65, Layout.seq()))
    lstm = sharpened(LSTM(LSTMConfig(n_layer=2, n_embd=32, n_hidden=64), 65, Layout.seq()))
    ids = torch.randint(0, 65, (8, 200), generator=torch.Generator().manual_seed(1))
    for name, model in (("gpt", gpt), ("lstm", lstm)):
        assert_bit_identical_across_kernels(model, ids, None, tmp_path / name)
