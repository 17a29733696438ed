"""Surprise maps: each position's bits, -log2 p(x_t | x_<t), drawn where a person would look.

PixelDefend (Song et al. 2018) and the likelihood-ratio paper (Ren et al. 2019, their Figure 1)
show per-pixel log-likelihoods as heat maps: the bits concentrate on the background of an
outlier, or on the few pixels an adversary flipped. One file per input:

- images: the input beside a heat map of bits per pixel (subpixels summed; for code grids, bits
  per code drawn over the code's patch), PNG;
- text: the passage with each character's background coloured by its bits (a token's bits are
  shared evenly by its characters), HTML; hovering shows the number;
- audio: the waveform, bits per sample (raw and smoothed over 10 ms) and the spectrogram on one
  time axis, PNG.

Files are named `NNNNN_<id>.png|html` in input order and written atomically.

Not here: maps of the likelihood ratio per position (the background model's per-token bits are
not kept), interactive viewers.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.detection.complexity import image_bytes, pcm16
from pipelines.io.atomic import write_file_atomically, write_text_atomically
from pipelines.scoring import LN2

logger = logging.getLogger(__name__)

MAX_COLOUR_BITS = 8.0  # text: this many bits per character (or more) is the darkest colour


def _name(index: int, id_: str, suffix: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._@-]+", "_", Path(id_).name or id_).strip("_")[-60:]
    return f"{index:05d}_{slug or 'input'}{suffix}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    write_file_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100))
    _plt().close(fig)
    return path


def write_maps(tokenizer: Any, ids: Sequence[str], examples: Sequence[Any],
               token_nats: Sequence[Sequence[float]], out_dir: str | Path,
               titles: Sequence[str] | None = None) -> list[Path]:
    """One surprise map per input under `out_dir` (see the module docstring)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    titles = titles or list(ids)
    draw = {"image": image_map, "text": text_map, "audio": audio_map}.get(tokenizer.modality)
    if draw is None:
        logger.warning("no surprise maps for %s data", tokenizer.modality)
        return []
    suffix = ".html" if tokenizer.modality == "text" else ".png"
    return [draw(tokenizer, x, np.asarray(n, dtype=np.float64) / LN2, t, out_dir / _name(i, id_, suffix))
            for i, (id_, x, n, t) in enumerate(zip(ids, examples, token_nats, titles, strict=True))]


# -- images --------------------------------------------------------------------------------------------
def position_grid(tokenizer: Any, bits: np.ndarray) -> np.ndarray:
    """Per-token bits -> (h, w) bits per grid cell (channels of a pixel summed)."""
    shape = tokenizer.layout.shape
    grid = bits.reshape(shape)
    return grid.sum(axis=-1) if grid.ndim == 3 else grid


def image_map(tokenizer: Any, example: Any, bits: np.ndarray, title: str, path: Path) -> Path:
    plt = _plt()
    image = image_bytes(example, getattr(tokenizer.config, "max_value", 255),
                        getattr(tokenizer.config, "background", "white"))
    grid = position_grid(tokenizer, bits)
    per = "pixel" if grid.shape == image.shape[:2] else "code"
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.2, 3.6))
    a.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    a.set_title("input", fontsize=9)
    h, w = image.shape[:2]
    shown = b.imshow(grid, cmap="inferno", extent=(0, w, h, 0), interpolation="nearest")
    b.set_title(f"bits per {per} (total {bits.sum():.0f})", fontsize=9)
    fig.colorbar(shown, ax=b, fraction=0.046, pad=0.04, label=f"bits per {per}")
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# -- text ----------------------------------------------------------------------------------------------
def char_bits(tokenizer: Any, text: str, bits: np.ndarray) -> np.ndarray:
    """Per-token bits -> per-character bits; a token's bits are shared by its characters."""
    if len(bits) == len(text):  # one token per character (char tokenizer)
        return bits
    ids = tokenizer.encode(text).reshape(-1).tolist()
    pieces = [tokenizer.decode([i]) for i in ids]
    if len(pieces) == len(bits) and "".join(pieces) == text:
        return np.concatenate([np.full(len(p), b / max(len(p), 1)) for p, b in zip(pieces, bits, strict=True)
                               if p] or [np.zeros(0)])
    # tokens that split a character (byte-level BPE on non-ASCII): spread the bits evenly
    logger.warning("surprise map: tokens do not align with characters; showing mean bits")
    return np.full(len(text), bits.sum() / max(len(text), 1))


def _colour(value: float) -> tuple[str, str]:
    """(background, text colour) for `value` bits."""
    from matplotlib import colormaps

    r, g, b, _ = colormaps["YlOrRd"](min(max(value / MAX_COLOUR_BITS, 0.0), 1.0))
    ink = "#fff" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "#000"
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}", ink


def text_map(tokenizer: Any, text: str, bits: np.ndarray, title: str, path: Path) -> Path:
    per_char = char_bits(tokenizer, str(text), bits)
    spans = []
    for c, v in zip(str(text), per_char, strict=True):
        bg, ink = _colour(float(v))
        spans.append(f'<span style="background:{bg};color:{ink}" title="{v:.2f} bits">'
                     f"{html.escape(c)}</span>")
    legend = "".join('<span style="background:{};color:{}">&nbsp;{:g}&nbsp;</span>'.format(*_colour(v), v)
                     for v in (0, 1, 2, 4, 6, 8))
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>surprise</title></head>"
        "<body style='font-family:sans-serif'>\n"
        f"<p>{html.escape(title)}</p>\n"
        f"<p>{len(per_char)} characters, {per_char.sum():.0f} bits ({per_char.mean():.3f} bits per "
        f"character). Bits per character: {legend} or more.</p>\n"
        "<pre style='white-space:pre-wrap;font-size:14px;line-height:1.5'>"
        + "".join(spans) + "</pre>\n</body></html>\n")
    write_text_atomically(path, page)
    return path


# -- audio ---------------------------------------------------------------------------------------------
def audio_map(tokenizer: Any, example: Any, bits: np.ndarray, title: str, path: Path) -> Path:
    plt = _plt()
    rate = tokenizer.sample_rate
    wave = pcm16(example, tokenizer).astype(np.float64) / 32767
    t_wave = np.arange(len(wave)) / rate
    t_bits = np.arange(len(bits)) * (len(wave) / max(len(bits), 1)) / rate  # tokens over time
    width = max(1, int(round(0.010 * len(bits) / max(t_wave[-1] if len(wave) else 1, 1e-9))))
    smooth = np.convolve(bits, np.ones(width) / width, mode="same")
    fig, (a, b, c) = plt.subplots(3, 1, figsize=(8, 6), sharex=True)
    a.plot(t_wave, wave, lw=0.5)
    a.set_ylabel("waveform")
    b.plot(t_bits, bits, lw=0.3, alpha=0.4, color="C3", label="per sample")
    b.plot(t_bits, smooth, lw=1.2, color="C3", label="10 ms mean")
    b.set_ylabel("bits per sample")
    b.legend(fontsize=7, loc="upper right")
    if len(wave) >= 256:
        c.specgram(wave, Fs=rate, NFFT=256, noverlap=192, cmap="magma")
    c.set_ylabel("Hz")
    c.set_xlabel("seconds")
    fig.suptitle(f"{title} ({bits.sum():.0f} bits, {bits.mean():.3f} bits per sample)", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
