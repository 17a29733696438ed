"""The WaveNet's integer-exact coder (priors/wavenet_exact.py): valid pmfs close to the float
step's, bit-identical across CPU kernel sets and thread counts, saved and loaded without the
float prior, conditional coders that need their labels."""

from __future__ import annotations

import pytest
import torch

from plugins.errors import CompressionError
from plugins.shared import Layout
from priors.wavenet import WaveNet, WaveNetConfig
from tests.priors.exact_kernels import (
    assert_bit_identical_across_kernels,
    assert_needs_and_uses_labels,
    assert_round_trip,
    assert_rows_independent,
    assert_valid_and_close_to_float_step,
    labels,
    sampled,
    sharpened,
)

V = 256  # mu-law levels


def small(kernel_size: int = 2, n_classes: int = 3, seed: int = 0) -> WaveNet:
    """A random WaveNet (dilations 1..8 twice) with weights scaled up: peaked, varied pmfs."""
    torch.manual_seed(seed)
    config = WaveNetConfig(n_layer=4, n_block=2, kernel_size=kernel_size, n_residual=16,
                           n_skip=32, n_classes=n_classes)
    return sharpened(WaveNet(config, V, Layout.seq()), 2.0)


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_pmfs_are_valid_and_match_the_float_step(kernel_size):
    """Over 200 samples (past the receptive field of 31 or 61) drawn from the float prior: 12-bit
    weights with 12 fractional bits measure ~0.001% of bits here (0.0001% on a WaveNet trained
    on FSDD), the bound is 0.5%."""
    model = small(kernel_size)
    coder = assert_valid_and_close_to_float_step(model, sampled(model, 6, 200), labels(6), peak=8)
    assert coder.max_block_length is None


def test_pmfs_are_bit_identical_across_cpu_kernels_and_threads(tmp_path):
    """A class-conditional coder, over 200 steps (the float step's pmfs differ between default
    and avx2 for this prior)."""
    ids = torch.randint(0, V, (16, 200), generator=torch.Generator().manual_seed(2))
    assert_bit_identical_across_kernels(small(), ids, labels(16), tmp_path)


def test_save_load_round_trip_needs_no_float_prior(tmp_path):
    ids = torch.randint(0, V, (4, 80), generator=torch.Generator().manual_seed(3))
    assert_round_trip(small(3).exact_coder(), ids, labels(4), tmp_path)


def test_a_rows_pmfs_do_not_depend_on_the_batch_around_it():
    ids = torch.randint(0, V, (5, 80), generator=torch.Generator().manual_seed(5))
    assert_rows_independent(small(3).exact_coder(), ids, labels(5))


def test_conditional_coder_needs_and_uses_its_labels():
    ids = torch.randint(0, V, (2, 40), generator=torch.Generator().manual_seed(4))
    assert_needs_and_uses_labels(small().exact_coder(), ids)


def test_real_valued_wavenet_is_refused():
    model = WaveNet(WaveNetConfig(n_layer=2, n_block=1, n_residual=4, n_skip=4, head="gaussian"),
                    1, Layout.seq(dims=1))
    with pytest.raises(CompressionError, match="categorical and bernoulli"):
        model.exact_coder()
