"""The mu-law tokenizer: companding, input forms, resampling, mixdown, distortion on real speech."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from plugins.errors import TokenizerError
from tests.conftest import DATA_DIR
from tokenizers_ar.mulaw import MuLawTokenizer, mu_law_decode, mu_law_encode, snr_db

FSDD = DATA_DIR / "fsdd" / "recordings"


def fsdd_files(n: int = 6) -> list:
    files = sorted(FSDD.glob("*_0.wav"))[:n]  # one test-split recording of several speakers
    if len(files) < n:
        pytest.fail(f"reference data missing: {FSDD} (set TOKAR_DATA_DIR to ../shared/data)")
    return files


def test_companding_known_values():
    # silence sits mid-scale, full scale at the ends, and the curve is symmetric
    assert mu_law_encode(np.array([-1.0, 0.0, 1.0]), 255).tolist() == [0, 128, 255]
    codes = np.arange(256)
    assert np.allclose(mu_law_decode(codes, 255), -mu_law_decode(255 - codes, 255))
    # companding: quiet samples get finer steps than loud ones
    steps = np.diff(mu_law_decode(codes, 255))
    assert steps[128] < steps[250] / 20


def test_every_code_round_trips_exactly():
    tok = MuLawTokenizer(sample_rate=8000)
    ids = torch.arange(256)
    assert torch.equal(tok.encode(tok.decode(ids)), ids)
    assert tok.decode(ids).dtype == np.float32


def test_snr_on_real_speech():
    """Distortion of encode/decode on FSDD recordings: about 34-38 dB at 8 kHz, mu = 255."""
    tok = MuLawTokenizer(sample_rate=8000)
    snrs = []
    for path in fsdd_files():
        x = tok.waveform(path)
        snrs.append(snr_db(x, tok.decode(tok.encode(path))))
    assert min(snrs) > 30, snrs
    # fewer levels, more distortion: the measure is not vacuous
    coarse = MuLawTokenizer(sample_rate=8000, mu=15)
    x = coarse.waveform(fsdd_files()[0])
    assert snr_db(x, coarse.decode(coarse.encode(x))) < min(snrs) - 10


def test_input_forms_agree():
    path = fsdd_files(1)[0]
    array, rate = sf.read(path, dtype="float32")
    tok = MuLawTokenizer(sample_rate=8000)
    expected = tok.encode(path)
    assert expected.numel() == array.size and rate == 8000
    assert torch.equal(tok.encode(str(path)), expected)
    assert torch.equal(tok.encode((array, rate)), expected)
    assert torch.equal(tok.encode({"array": array, "sampling_rate": rate}), expected)
    assert torch.equal(tok.encode({"bytes": path.read_bytes(), "path": None}), expected)
    assert torch.equal(tok.encode({"bytes": None, "path": str(path)}), expected)
    pcm16, _ = sf.read(path, dtype="int16")
    assert torch.equal(tok.encode((pcm16, rate)), expected)
    assert torch.equal(tok.encode(torch.from_numpy(array)), expected)  # bare: at sample_rate


def test_resampling_keeps_duration_and_pitch():
    rate, f0 = 22050, 440.0
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * f0 * t)
    tok = MuLawTokenizer(sample_rate=8000)
    ids = tok.encode((tone, rate))
    assert ids.numel() == 8000
    spectrum = np.abs(np.fft.rfft(tok.decode(ids)))
    assert abs(np.argmax(spectrum) - f0) <= 1  # one second at 8 kHz: bins of 1 Hz


def test_mixdown_both_channel_orders():
    rng = np.random.default_rng(0)
    left, right = 0.3 * rng.standard_normal(800), 0.1 * rng.standard_normal(800)
    tok = MuLawTokenizer(sample_rate=8000)
    mono = tok.encode(((left + right) / 2, 8000))
    assert torch.equal(tok.encode((np.stack([left, right], 1), 8000)), mono)  # (frames, channels)
    assert torch.equal(tok.encode((np.stack([left, right], 0), 8000)), mono)  # (channels, frames)


def test_peak_normalisation():
    quiet = 0.01 * np.sin(np.linspace(0, 50, 4000))
    tok = MuLawTokenizer(sample_rate=8000, normalize=True, peak=0.5)
    assert np.isclose(np.abs(tok.waveform((quiet, 8000))).max(), 0.5)
    loud = tok.decode(tok.encode((quiet, 8000)))
    plain = MuLawTokenizer(sample_rate=8000)
    assert np.abs(loud).max() > 20 * np.abs(plain.decode(plain.encode((quiet, 8000)))).max()


def test_write_wav_round_trip(tmp_path):
    tok = MuLawTokenizer(sample_rate=8000)
    ids = tok.encode(fsdd_files(1)[0])
    path = tok.write_wav(tok.decode(ids), tmp_path / "x.wav")
    info = sf.info(path)
    assert info.samplerate == 8000 and info.channels == 1 and info.frames == ids.numel()
    again = tok.encode(path)  # 16-bit PCM can move a sample across a level boundary, rarely
    assert (again != ids).float().mean() < 0.01


def test_unit_is_audio_samples():
    tok = MuLawTokenizer(sample_rate=8000)
    assert tok.unit == "sample" and tok.vocab_size == 256 and tok.layout.kind == "seq"
    assert tok.count_units((np.zeros(16000), 16000)) == 8000


@pytest.mark.parametrize("bad, message", [
    ("/no/such/file.wav", "cannot read audio"),
    ({"foo": 1}, "needs 'array'"),
    ((np.zeros(3), 8000, 1), "(array, sampling_rate)"),
    (np.array(["a", "b"]), "expected audio samples"),
    (np.zeros((2, 2, 2)), "1-D (mono) or 2-D"),
    (np.array([0.0, np.nan]), "NaN"),
])
def test_clear_errors(bad, message):
    with pytest.raises(TokenizerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MuLawTokenizer().encode(bad)


def test_decode_rejects_out_of_range_ids():
    with pytest.raises(TokenizerError, match=r"\[0, 255\]"):
        MuLawTokenizer().decode(torch.tensor([0, 256]))


def test_bytes_of_other_formats():
    buf = io.BytesIO()
    sf.write(buf, np.zeros(100), 8000, format="FLAC")
    assert MuLawTokenizer(sample_rate=8000).encode({"bytes": buf.getvalue(), "path": "x.flac"}).numel() == 100
