"""The `real` and `waveform` tokenizers: standardisation, layouts, exact-enough round trips,
NaN refused naming the example, and the discretization that puts densities in data units."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from plugins.errors import TokenizerError
from tests.conftest import DATA_DIR
from tokenizers_ar.real import RealTokenizer, WaveformTokenizer


def walks(n=3, d=2, seed=0):
    rng = np.random.default_rng(seed)
    return [np.cumsum(rng.standard_normal((30 + i, d)), 0) * 4 + 10 for i in range(n)]


def test_sequences_are_standardised_per_dimension_and_decode_back():
    tok = RealTokenizer()
    data = walks()
    tok.fit(data)
    assert tok.layout.kind == "seq" and tok.layout.dims == 2 and tok.vocab_size == 0
    z = torch.cat([tok.encode(x) for x in data]).double()
    zeros, ones = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(z.mean(0), zeros, atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), ones, atol=1e-5, rtol=0)
    np.testing.assert_allclose(tok.decode(tok.encode(data[0])), data[0], rtol=1e-6, atol=1e-5)


def test_vectors_are_a_one_row_grid_standardised_per_feature():
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((50, 5)) * np.arange(1, 6) + np.arange(5)
    tok = RealTokenizer(vector=True)
    tok.fit(list(rows))
    assert tok.layout.kind == "grid" and tok.layout.shape == (1, 5) and tok.layout.dims == 1
    assert tok.encode(rows[0]).shape == (1, 5, 1)
    np.testing.assert_allclose(tok.std, rows.std(0), rtol=1e-9)
    assert tok.count_units(rows[0]) == 5


def test_nan_or_inf_is_an_error_that_names_the_example():
    tok = RealTokenizer()
    tok.fit(walks())
    bad = walks()[0].copy()
    bad[7, 1] = np.nan
    with pytest.raises(TokenizerError, match=r"NaN or infinite values \(first at index \[7, 1\]\)"):
        tok.encode(bad)
    with pytest.raises(TokenizerError, match="not fitted"):
        RealTokenizer().encode(walks()[0])


def test_discretization_turns_the_density_into_a_bin_probability_in_data_units():
    """N(0, 1) data quantized at step 0.01: -log p(bin) ~ -log N(x) - log 0.01; on the
    standardised scale the density shrinks by the std, which the offset adds back."""
    tok = RealTokenizer(quantization_step=0.01)
    tok.fit([np.random.default_rng(0).standard_normal((10_000, 1)) * 3.0])
    assert tok.discretization_nats() == pytest.approx(math.log(tok.std[0]) - math.log(0.01))
    assert RealTokenizer().discretization_nats.__doc__  # differential when no step is stated


def test_waveform_reads_audio_files_as_float_samples():
    path = DATA_DIR / "fsdd" / "recordings" / "0_george_0.wav"
    if not path.is_file():
        pytest.fail(f"reference data missing: {path}")
    tok = WaveformTokenizer(sample_rate=8000)
    tok.fit([str(path)])
    x = tok.encode(str(path))
    assert x.dtype == torch.float32 and x.shape[1] == 1 and x.shape[0] == tok.count_units(str(path))
    wave = tok.decode(x)
    assert wave.dtype == np.float32 and np.abs(wave).max() <= 1.0
    import soundfile as sf

    original, rate = sf.read(str(path), dtype="float64")
    assert rate == 8000 and np.abs(wave - original).max() < 1e-5
    # 16-bit PCM: the default step is 2 / 2**16
    assert tok.discretization_nats() == pytest.approx(math.log(tok.std[0]) - math.log(2 / 2**16))
