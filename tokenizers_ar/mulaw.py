"""Mu-law tokenizer: audio samples -> 256 companded levels, the input format of WaveNet
(van den Oord et al. 2016, section 2.2; ITU-T G.711).

A waveform x in [-1, 1] is companded, F(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu), which spends
more levels on quiet samples (where the ear, and speech, live) than uniform quantization would,
then quantized uniformly to mu + 1 levels: token = round((F(x) + 1) / 2 * mu). Decoding inverts
both, x = sign(y) ((1 + mu)^|y| - 1) / mu with y = 2 token / mu - 1, and returns float32 arrays
at `sample_rate`; `write_wav` saves them with soundfile.

Before companding, every input is mixed down to mono (mean over channels), resampled to
`sample_rate` (polyphase) and, if `normalize` is set, scaled so that its peak is `peak`
(tokenizers_ar/audio.py, shared with the `waveform` tokenizer). Samples outside [-1, 1] are
clipped.

Distortion: the round trip is lossy. On FSDD speech at 8 kHz with mu = 255 the signal-to-noise
ratio of decode(encode(x)) is about 30-40 dB (tests/tokenizers_ar/test_mulaw.py checks a lower
bound on real recordings; benchmarks/mulaw_snr.py measures the test split). encode(decode(ids))
== ids holds exactly. One token is one audio sample, so scores come out in bits per sample.

Inputs: a dict {"array", "sampling_rate"} (what Hugging Face `datasets` Audio decodes to), a
dict {"bytes", "path"} (an undecoded Audio column), an (array, rate) tuple, a path to an audio
file, or a bare array (taken to be at `sample_rate` already). 2-D arrays hold channels along
their shorter axis, so both soundfile's (frames, channels) and torchaudio's (channels, frames)
work. Integer PCM is scaled by its type's range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from pydantic import Field

from plugins.errors import TokenizerError
from tokenizers_ar.audio import load_waveform, read_audio, snr_db
from tokenizers_ar.base import Layout, Tokenizer, TokenizerConfig

__all__ = ["MuLawConfig", "MuLawTokenizer", "mu_law_decode", "mu_law_encode", "read_audio", "snr_db"]


class MuLawConfig(TokenizerConfig):
    mu: int = Field(255, ge=1, le=65535, description="companding constant; mu + 1 levels")
    sample_rate: int = Field(16000, ge=1, description="audio is resampled to this rate (Hz)")
    normalize: bool = Field(False, description="scale each recording so that its peak is `peak`")
    peak: float = Field(0.95, gt=0.0, le=1.0, description="target peak with normalize")


def mu_law_encode(x: np.ndarray, mu: int) -> np.ndarray:
    """Waveform in [-1, 1] -> integer codes in [0, mu]."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    return np.rint((y + 1.0) / 2.0 * mu).astype(np.int64)


def mu_law_decode(codes: np.ndarray, mu: int) -> np.ndarray:
    """Integer codes in [0, mu] -> waveform in [-1, 1]."""
    y = 2.0 * np.asarray(codes, dtype=np.float64) / mu - 1.0
    return np.sign(y) * np.expm1(np.abs(y) * math.log1p(mu)) / mu


class MuLawTokenizer(Tokenizer):
    name = "mulaw"
    Config = MuLawConfig
    modality = "audio"
    unit = "sample"
    layout_kind = "seq"
    lossless = False

    @property
    def vocab_size(self) -> int:
        return self.known_vocab_size(self.config)

    @classmethod
    def known_vocab_size(cls, config) -> int:
        return config.mu + 1

    @property
    def layout(self) -> Layout:
        return Layout.seq()

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def waveform(self, example: Any) -> np.ndarray:
        """The mono float64 waveform at `sample_rate` that `encode` companding starts from
        (resampled, mixed down, peak-normalised if configured): the reference for SNR."""
        c = self.config
        return load_waveform(example, c.sample_rate, c.peak if c.normalize else None, self.name)

    def encode(self, example: Any) -> torch.Tensor:
        return torch.from_numpy(mu_law_encode(self.waveform(example), self.config.mu))

    def decode(self, ids: torch.Tensor | Sequence[int]) -> np.ndarray:
        ids = torch.as_tensor(ids).reshape(-1).numpy()
        if ids.size and (ids.min() < 0 or ids.max() > self.config.mu):
            raise TokenizerError(f"mulaw tokenizer: ids must lie in [0, {self.config.mu}], got "
                                 f"[{ids.min()}, {ids.max()}].")
        return mu_law_decode(ids, self.config.mu).astype(np.float32)

    def write_wav(self, audio: np.ndarray | torch.Tensor, path: str | Path) -> Path:
        """Save a decoded waveform (or ids, decoded first) as 16-bit PCM WAV at `sample_rate`."""
        if torch.is_tensor(audio) and not audio.is_floating_point():
            audio = self.decode(audio)
        path = Path(path)
        sf.write(path, np.clip(np.asarray(audio, dtype=np.float32), -1, 1), self.sample_rate,
                 subtype="PCM_16", format="WAV")
        return path
