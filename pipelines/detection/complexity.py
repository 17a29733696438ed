"""Input complexity: the length of an input under a generic lossless compressor, in bits.

Serrà et al. 2020 ("Input complexity and out-of-distribution detection with likelihood-based
generative models") show that a generative model's likelihood is dominated by how *simple* an
input is (a plain MNIST digit is cheaper to code than any Fashion-MNIST garment, whatever the
model was trained on), and correct for it with the length L(x) of the input under a compressor
that knows nothing of the data set:

    S(x) = -log2 p(x) - L(x)         (bits; high = the model needs more bits than a generic
                                      compressor would: anomalous)

`compressed_bits(example, tokenizer, compressor)` gives L(x) for one example, measured on what the
prior models, so that both terms of S describe the same object (a 17-level image is compressed
at 17 levels, not as the 8-bit picture it came from):
- images (`png`, the default): the token grid as an 8-bit image when the ids fit in a byte (the
  pixel tokenizer's quantized values; a VQ tokenizer's code map), else the 8-bit picture; PNG
  at compression level 9. `xz`: the same bytes through LZMA2.
- audio (`flac`, the default): discrete tokens of at most 256 values (mu-law codes) as 8-bit
  PCM, real-valued audio as 16-bit PCM (the resolution its bits are reported at), mono at the
  tokenizer's sample rate, FLAC at its highest compression level (soundfile). `xz`: the same
  PCM bytes through LZMA2.
- text (`xz`, the only one): the UTF-8 bytes through raw LZMA2 (no container header).

Not here: tokar's own arithmetic coder as the compressor (it needs the compression issue), FLIF
or JPEG 2000 (Serrà's best image compressors; not installable offline here), per-pixel
complexity maps.
"""

from __future__ import annotations

import io
import lzma
from typing import Any

import numpy as np

from plugins.errors import DataError
from tokenizers_ar.audio import load_waveform
from tokenizers_ar.images import flatten

COMPRESSORS = ("png", "flac", "xz")
DEFAULTS = {"image": "png", "audio": "flac", "text": "xz"}
FITS = {"image": ("png", "xz"), "audio": ("flac", "xz"), "text": ("xz",)}
_LZMA2 = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def default_compressor(modality: str) -> str:
    if modality not in DEFAULTS:
        raise DataError(f"input complexity has no compressor for {modality} data; "
                        f"it covers {', '.join(DEFAULTS)}.")
    return DEFAULTS[modality]


def check_compressor(compressor: str, modality: str) -> None:
    fits = FITS.get(modality, ())
    if compressor not in fits:
        raise DataError(f"compressor '{compressor}' does not compress {modality} data; use "
                        f"{' or '.join(fits) or 'another modality'}.")


def xz_bits(data: bytes) -> int:
    return 8 * len(lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA2))


def image_bytes(example: Any, max_value: int, background: Any = "white") -> np.ndarray:
    """One image as an 8-bit array (H, W) or (H, W, 3), the way a person sees it (surprise maps,
    and complexity under tokenizers whose ids are not pixel values)."""
    from PIL import Image


    if isinstance(example, Image.Image):  # flattened as the tokenizer reads it (transparency...)
        return np.asarray(flatten(example, background))
    array = np.asarray(example, dtype=np.float64)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return np.rint(array * (255.0 / max_value)).clip(0, 255).astype(np.uint8)


def _byte_tokens(example: Any, tokenizer: Any) -> np.ndarray | None:
    """The token ids as uint8 when the tokenizer is discrete and its ids fit in a byte."""
    if getattr(tokenizer, "continuous", False) or not 0 < tokenizer.vocab_size <= 256:
        return None
    return tokenizer.encode(example).numpy().astype(np.uint8)


def png_bits(image: np.ndarray) -> int:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=9)
    return 8 * len(buffer.getvalue())


def pcm16(example: Any, tokenizer: Any) -> np.ndarray:
    """The mono waveform at the audio tokenizer's sample rate as 16-bit PCM."""

    waveform = tokenizer.waveform(example) if hasattr(tokenizer, "waveform") else \
        load_waveform(example, tokenizer.sample_rate)
    return np.rint(np.clip(waveform, -1.0, 1.0) * 32767).astype(np.int16)


def flac_bits(samples: np.ndarray, sample_rate: int) -> int:
    """FLAC of int8 or int16 PCM samples."""
    import soundfile as sf

    buffer = io.BytesIO()
    if samples.dtype == np.int8:  # soundfile writes from int16: the high byte becomes the sample
        samples, subtype = samples.astype(np.int16) * 256, "PCM_S8"
    else:
        subtype = "PCM_16"
    sf.write(buffer, samples, sample_rate, format="FLAC", subtype=subtype, compression_level=1.0)
    return 8 * len(buffer.getvalue())


def compressed_bits(example: Any, tokenizer: Any, compressor: str) -> int:
    """L(x): bits of `example` under `compressor` (see the module docstring)."""
    modality = tokenizer.modality
    check_compressor(compressor, modality)
    if modality == "image":
        image = _byte_tokens(example, tokenizer)
        if image is None:
            image = image_bytes(example, getattr(tokenizer.config, "max_value", 255),
                                getattr(tokenizer.config, "background", "white"))
        return png_bits(image) if compressor == "png" else xz_bits(image.tobytes())
    if modality == "audio":
        codes = _byte_tokens(example, tokenizer)
        samples = pcm16(example, tokenizer) if codes is None else \
            (codes.astype(np.int16) - 128).astype(np.int8)
        if compressor == "flac":
            return flac_bits(samples, tokenizer.sample_rate)
        return xz_bits(samples.tobytes())
    return xz_bits(str(example).encode("utf-8"))
