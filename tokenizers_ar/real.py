"""Real values kept real: tokenizers for priors with a continuous head (a Gaussian mixture).

Autoregressive models need not quantize: "discrete distribution is popular in AR models, but not
a must". These tokenizers pass real numbers through, standardised, and a prior's continuous head
(priors/heads/gaussian.py) models each position's density, as in RNADE (Uria et al. 2013) and
MADE-MoG (Germain et al. 2015).

- `real`: sequences of real vectors, arrays (T,) or (T, D) -> float32 (T, D), layout seq with D
  dims; or, with `vector: true`, fixed-length feature vectors (L,) -> (1, L, 1), a grid of one
  row that grid priors and MADE-style models take whole (a row of a feature table).
- `waveform`: audio as float samples, read like the mu-law tokenizer reads it (mono, resampled
  to `sample_rate`, optionally peak-normalised), one real per sample: a WaveNet with a mixture
  head models the raw waveform instead of its 256 companded levels.

Standardisation: `fit` measures the training data's mean and standard deviation (per dimension;
per feature for vectors) and encoding subtracts and divides, so the head's parameters live on a
scale of about 1. The round trip is exact up to float32 (lossy in principle, hence
`lossless = False`); decoding undoes the standardisation.

Scores: a density is not a probability, so to compare with discrete models the likelihood module
adds `discretization_nats()` per position: log(std) (back to the data's units) minus
log(quantization_step), which turns the density into the probability of the data's own
quantization bin, p(x) * step (16-bit PCM: step 2 / 2**16 on [-1, 1]). With no step stated,
scores are differential: bits of the density, which may be negative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field

from plugins.errors import TokenizerError
from tokenizers_ar.audio import describe, load_waveform
from tokenizers_ar.base import Layout, Tokenizer, TokenizerConfig


class RealConfig(TokenizerConfig):
    vector: bool = Field(False, description="examples are fixed-length feature vectors, not sequences")
    standardize: bool = Field(True, description="subtract the training mean, divide by the std")
    quantization_step: float | None = Field(
        None, gt=0, description="the data's resolution in its own units, for bits per value; "
        "null: differential (density) bits")


class RealTokenizer(Tokenizer):
    name = "real"
    Config = RealConfig
    modality = "series"
    unit = "value"
    layout_kind = "seq"
    continuous = True
    lossless = False
    smoke_settings: dict[str, Any] = {}

    def __init__(self, config: RealConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.mean: np.ndarray | None = None  # (D,) per dimension, (L,) per feature for vectors
        self.std: np.ndarray | None = None

    # -- what a position holds -------------------------------------------------------------------
    @property
    def vector(self) -> bool:
        """Fixed-length feature vectors (a grid of one row), not sequences."""
        return bool(getattr(self.config, "vector", False))

    @property
    def is_fitted(self) -> bool:
        return self.mean is not None

    @property
    def vocab_size(self) -> int:
        return 0  # no ids: real values

    @property
    def dims(self) -> int:
        self._require_fit()
        return 1 if self.vector else len(self.mean)

    @property
    def layout(self) -> Layout:
        self._require_fit()
        if self.vector:
            return Layout.grid(1, len(self.mean), dims=1)
        return Layout.seq(dims=self.dims)

    def _require_fit(self) -> None:
        if not self.is_fitted:
            raise TokenizerError(f"{self.name} tokenizer is not fitted: call fit(examples) first "
                                 "(it measures the data's dimensions and scale).")

    # -- reading examples ------------------------------------------------------------------------
    def values(self, example: Any) -> np.ndarray:
        """One example as a float64 array: (T, D) for sequences, (L,) for vectors."""
        array = np.asarray(example.numpy() if torch.is_tensor(example) else example)
        if array.dtype.kind not in "fiub":
            raise TokenizerError(f"{self.name} tokenizer: expected numbers, got an array of "
                                 f"{array.dtype} {describe(example)}.")
        array = array.astype(np.float64)
        if self.vector:
            if array.ndim != 1:
                raise TokenizerError(f"{self.name} tokenizer (vector): expected a 1-D feature "
                                     f"vector, got shape {array.shape}.")
        elif array.ndim == 1:
            array = array[:, None]
        elif array.ndim != 2:
            raise TokenizerError(f"{self.name} tokenizer: expected a sequence (T,) or (T, D), "
                                 f"got shape {array.shape}.")
        if not np.all(np.isfinite(array)):
            bad = np.argwhere(~np.isfinite(array))[0].tolist()
            raise TokenizerError(f"{self.name} tokenizer: the example {describe(example)} holds "
                                 f"NaN or infinite values (first at index {bad}); clean or drop it.")
        return array

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, examples: Iterable[Any]) -> None:
        n, total, squares = 0, None, None
        for example in examples:
            x = self.values(example)
            x = x[None] if self.vector else x  # (rows, D or L)
            if total is not None and x.shape[1] != total.shape[0]:
                raise TokenizerError(f"{self.name} tokenizer: examples of {total.shape[0]} and "
                                     f"{x.shape[1]} {'features' if self.vector else 'dims'}; "
                                     "every example needs the same number.")
            total = x.sum(0) if total is None else total + x.sum(0)
            squares = (x**2).sum(0) if squares is None else squares + (x**2).sum(0)
            n += len(x)
        if not n:
            raise TokenizerError(f"{self.name} tokenizer: no training values to fit on.")
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean**2, 0))
        if not self.config.standardize:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        self.mean, self.std = mean, np.where(std > 1e-12, std, 1.0)

    def state(self) -> dict[str, Any]:
        return {"mean": None if self.mean is None else self.mean.tolist(),
                "std": None if self.std is None else self.std.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("mean") is not None:
            self.mean = np.asarray(state["mean"], dtype=np.float64)
            self.std = np.asarray(state["std"], dtype=np.float64)

    # -- encoding --------------------------------------------------------------------------------
    def encode(self, example: Any) -> torch.Tensor:
        self._require_fit()
        x = self.values(example)
        if x.shape[-1] != len(self.mean):
            raise TokenizerError(f"{self.name} tokenizer: {x.shape[-1]} "
                                 f"{'features' if self.vector else 'dims'} per example, "
                                 f"fitted for {len(self.mean)}.")
        z = ((x - self.mean) / self.std).astype(np.float32)
        return torch.from_numpy(z.reshape(1, -1, 1) if self.vector else z)

    def decode(self, ids: torch.Tensor | Sequence[float]) -> np.ndarray:
        self._require_fit()
        z = torch.as_tensor(ids, dtype=torch.float64).numpy()
        if self.vector:
            return z.reshape(-1) * self.std + self.mean
        return z.reshape(-1, len(self.mean)) * self.std + self.mean

    def count_units(self, example: Any) -> int:
        x = self.values(example)
        return int(x.size) if self.vector else int(x.shape[0] * x.shape[1])

    def discretization_nats(self) -> float:
        """Per position: sum over its dims of log(std) - log(step) (see the module docstring)."""
        self._require_fit()
        log_std = float(np.log(self.std).mean()) if self.vector else float(np.log(self.std).sum())
        step = self.config.quantization_step
        per_dim = 1 if self.vector else self.dims
        return log_std - (per_dim * math.log(step) if step is not None else 0.0)


class WaveformConfig(TokenizerConfig):
    sample_rate: int = Field(16000, ge=1, description="audio is resampled to this rate (Hz)")
    normalize: bool = Field(False, description="scale each recording so that its peak is `peak`")
    peak: float = Field(0.95, gt=0.0, le=1.0, description="target peak with normalize")
    standardize: bool = Field(True, description="divide by the training data's std (and centre)")
    quantization_step: float | None = Field(
        2 / 2**16, gt=0, description="resolution of the audio on [-1, 1], for bits per sample: "
        "16-bit PCM by default; null: differential bits")


class WaveformTokenizer(RealTokenizer):
    """Audio as real samples, one per position: layout seq with 1 dim, unit "sample"."""

    name = "waveform"
    Config = WaveformConfig
    modality = "audio"
    unit = "sample"
    smoke_settings = {"sample_rate": 8000}

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def values(self, example: Any) -> np.ndarray:
        c = self.config
        return load_waveform(example, c.sample_rate, c.peak if c.normalize else None, self.name)[:, None]

    def decode(self, ids: torch.Tensor | Sequence[float]) -> np.ndarray:
        """A float32 waveform at `sample_rate`, clipped to [-1, 1]."""
        return np.clip(super().decode(ids)[:, 0], -1, 1).astype(np.float32)
