"""Reading audio for the audio tokenizers (`mulaw`, `waveform`): whatever form users have it in,
to one mono float waveform at the tokenizer's sample rate.

Inputs: a dict {"array", "sampling_rate"} (what Hugging Face `datasets` Audio decodes to), a
dict {"bytes", "path"} (an undecoded Audio column), an (array, rate) tuple, a path to an audio
file (WAV, FLAC, OGG: soundfile), or a bare array (taken to be at the target rate already). 2-D
arrays hold channels along their shorter axis, so both soundfile's (frames, channels) and
torchaudio's (channels, frames) work; they are mixed down to mono (mean over channels). Integer
PCM is scaled by its type's range. Resampling is polyphase (scipy.signal.resample_poly).
"""

from __future__ import annotations

import io
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from plugins.errors import TokenizerError
from plugins.resources import check_fits


def load_waveform(example: Any, sample_rate: int, peak: float | None = None,
                  who: str = "audio") -> np.ndarray:
    """Any accepted input -> mono float64 waveform at `sample_rate`, scaled so that its peak is
    `peak` when given. NaN or infinite samples are an error naming the input."""
    x, rate = read_audio(example)
    if x.ndim == 2:  # channels along the shorter axis: mix down to mono
        x = x.mean(axis=1 if x.shape[1] <= x.shape[0] else 0)
    if x.ndim != 1:
        raise TokenizerError(f"{who} tokenizer: expected a 1-D (mono) or 2-D (multichannel) "
                             f"waveform, got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise TokenizerError(f"{who} tokenizer: the waveform {describe(example)} holds NaN or "
                             "infinite samples.")
    if rate is not None and rate != sample_rate and x.size:
        from scipy.signal import resample_poly

        # A header's rate decides the output size: a clip "at 1 Hz" becomes 16,000 times longer.
        check_fits(x.size * (sample_rate / rate) * 8 * 3,
                   f"{who} tokenizer: resampling {describe(example)} ({x.size} samples at {rate} Hz, "
                   f"as its header says) to {sample_rate} Hz",
                   "check the file's header (its sample rate), or set tokenizer.sample_rate.")
        g = math.gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g)
    if peak is not None and x.size and np.abs(x).max() > 0:
        x = x * (peak / np.abs(x).max())
    return x


def describe(example: Any) -> str:
    """A short name for an input in error messages: its path, or its kind and shape."""
    if isinstance(example, (str, Path)):
        return str(example)
    if isinstance(example, dict) and example.get("path"):
        return str(example["path"])
    shape = getattr(example[0] if isinstance(example, tuple) else example, "shape", None)
    return f"({type(example).__name__}{f' of shape {tuple(shape)}' if shape is not None else ''})"


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Signal-to-noise ratio of `noisy` against `clean`, in decibels."""
    noise = np.sum((np.asarray(clean, np.float64) - noisy) ** 2)
    return float(10 * np.log10(np.sum(np.asarray(clean, np.float64) ** 2) / max(noise, 1e-20)))


def read_audio(example: Any) -> tuple[np.ndarray, int | None]:
    """Any accepted input -> (float64 array, its rate); the rate is None for bare arrays."""
    if isinstance(example, dict):
        if "array" in example:
            return _as_float(example["array"]), int(example["sampling_rate"])
        if example.get("bytes"):
            return _read_file(io.BytesIO(example["bytes"]), example.get("path") or "<bytes>")
        if example.get("path"):
            return _read_file(example["path"], example["path"])
        raise TokenizerError(f"audio: an audio dict needs 'array' and 'sampling_rate', "
                             f"or 'bytes'/'path'; got keys {sorted(example)}.")
    if isinstance(example, (str, Path)):
        return _read_file(example, example)
    if isinstance(example, tuple):
        if len(example) != 2:
            raise TokenizerError(f"audio: a tuple must be (array, sampling_rate), got "
                                 f"{len(example)} items.")
        return _as_float(example[0]), int(example[1])
    return _as_float(example), None


def _read_file(source: Any, name: Any) -> tuple[np.ndarray, int]:
    if isinstance(source, str | Path):  # opening a FIFO would wait forever; a device never ends
        try:
            regular = stat.S_ISREG(os.stat(source).st_mode)
        except OSError as exc:
            raise TokenizerError(f"audio: cannot read audio from {name} ({exc.strerror or exc}).") from exc
        if not regular:
            raise TokenizerError(f"audio: {name} is not a regular file (a folder, FIFO or device); "
                                 "give audio files.")
    try:
        data, rate = sf.read(source, dtype="float64", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise TokenizerError(f"audio: cannot read audio from {name} ({exc}); soundfile "
                             "reads WAV, FLAC and OGG (convert other formats first).") from exc
    return data, int(rate)


def _as_float(array: Any) -> np.ndarray:
    a = np.asarray(array.numpy() if torch.is_tensor(array) else array)
    if a.dtype.kind in "iu":  # integer PCM: scale by the type's range
        info = np.iinfo(a.dtype)
        return (a.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
    if a.dtype.kind not in "f":
        raise TokenizerError(f"audio: expected audio samples, got an array of {a.dtype}.")
    return a.astype(np.float64)
