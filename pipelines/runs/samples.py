"""Writing decoded samples in the data's own form: text files, PNG grids of images, WAV files
of audio (with one PNG of their waveforms and spectrograms), CSV rows of real feature vectors.

Every file is rendered in memory first, then written atomically (pipelines/io/safe.py): a full disk
is one error naming the file and its size, and no half-written file is left behind. An output
path of the wrong kind (a folder where a file goes, a file where a folder goes) is one error.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.io.atomic import is_stream, write_bytes_atomically
from pipelines.io.safe import ensure_folder
from plugins.errors import StorageError, TokarError


def image_grid(images: Sequence[Image.Image], cols: int | None = None, min_cell: int = 32,
               pad: int = 2) -> Image.Image:
    """Tile images into a grid (square-ish unless `cols` is given); tiny images are enlarged
    (nearest neighbour) so that a cell is at least `min_cell` pixels."""
    if not images:
        raise TokarError("no images to put in a grid")
    w, h = images[0].size
    scale = max(1, math.ceil(min_cell / max(w, h)))
    cw, ch = w * scale, h * scale
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    mode = "RGB" if any(im.mode not in ("L", "1") for im in images) else "L"
    grid = Image.new(mode, (cols * (cw + pad) + pad, rows * (ch + pad) + pad), color=128)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(im.convert(mode).resize((cw, ch), Image.NEAREST),
                   (pad + c * (cw + pad), pad + r * (ch + pad)))
    return grid


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.asarray(wave, dtype=np.float32), -1, 1), sample_rate,
             subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def write_wav(wave: np.ndarray, out: Path, sample_rate: int) -> Path:
    """One clip as the 16-bit WAV file `out` (`tokar sample RUN -n 1 --out x.wav`)."""
    return write_bytes_atomically(out, wav_bytes(wave, sample_rate))


def write_audio(waves: Sequence[np.ndarray], out: Path, sample_rate: int) -> list[Path]:
    """One 16-bit WAV per waveform (sample_NNN.wav) in the folder `out`, and samples.png: a
    row per sample, its waveform beside its spectrogram."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    ensure_folder(out)
    paths = []
    for i, wave in enumerate(waves):
        path = out / f"sample_{i:03d}.wav"
        write_bytes_atomically(path, wav_bytes(wave, sample_rate))
        paths.append(path)
    fig, axes = plt.subplots(len(waves), 2, figsize=(10, 1.8 * len(waves)), squeeze=False)
    for (ax_wave, ax_spec), wave in zip(axes, waves, strict=True):
        t = np.arange(len(wave)) / sample_rate
        ax_wave.plot(t, wave, linewidth=0.5)
        ax_wave.set(xlim=(0, max(t[-1], 1 / sample_rate)) if len(wave) else None, ylim=(-1, 1),
                    ylabel="amplitude")
        if len(wave) >= 256:  # a spectrogram needs a few FFT windows
            ax_spec.specgram(wave, NFFT=256, Fs=sample_rate, noverlap=192, cmap="magma")
        ax_spec.set(ylabel="Hz")
    axes[-1][0].set_xlabel("seconds")
    axes[-1][1].set_xlabel("seconds")
    fig.tight_layout()
    png = out / "samples.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    write_bytes_atomically(png, buffer.getvalue())
    return [*paths, png]


def write_samples(examples: Sequence[Any], out: str | Path, cols: int | None = None,
                  tokenizer: Any = None) -> list[Path]:
    """Write samples: images as one PNG grid at `out` (a .png path, or a folder to hold
    samples.png); text as `out` (one .txt file, samples separated by a rule) or, for a folder,
    one sample_NNN.txt per sample; audio (the tokenizer's modality, at its `sample_rate`) as
    WAVs and a plot in the folder `out`, or one clip as the .wav file `out`. `-` (standard
    output), a device or a FIFO takes one file's bytes (text, a PNG grid, a CSV, one WAV).
    `cols`: images per grid row. Returns the files written."""
    out = Path(out)
    if not examples:
        return []
    single = is_stream(out)  # `-`, /dev/null, a FIFO: one stream of bytes, never a folder
    if tokenizer is not None and tokenizer.modality == "audio":
        if len(examples) == 1 and (single or out.suffix.lower() == ".wav"):
            return [write_wav(examples[0], out, tokenizer.sample_rate)]  # one clip: that file
        return write_audio(examples, out.with_suffix("") if out.suffix else out, tokenizer.sample_rate)
    if isinstance(examples[0], Image.Image):
        if out.suffix and out.suffix.lower() != ".png" and not out.is_dir() and not single:
            raise StorageError(f"cannot write images to {out}: give a .png file or a folder.")
        path = out if out.suffix.lower() == ".png" or single else ensure_folder(out) / "samples.png"
        buffer = io.BytesIO()
        image_grid(examples, cols).save(buffer, format="PNG")
        write_bytes_atomically(path, buffer.getvalue())
        return [path]
    if isinstance(examples[0], str):
        if single or (out.suffix and not out.is_dir()):
            text = "\n\n----------\n\n".join(examples) + "\n"
            write_bytes_atomically(out, text.encode("utf-8"))
            return [out]
        ensure_folder(out)
        paths = []
        for i, text in enumerate(examples):
            path = out / f"sample_{i:03d}.txt"
            write_bytes_atomically(path, text.encode("utf-8"))
            paths.append(path)
        return paths
    if isinstance(examples[0], np.ndarray) and all(np.ndim(x) == 1 for x in examples):
        # real feature vectors (the `real` tokenizer with vector: true): one CSV row each
        path = out if out.suffix.lower() == ".csv" or single else ensure_folder(out) / "samples.csv"
        rows = [",".join(f"{v:.6g}" for v in np.asarray(x, dtype=np.float64)) for x in examples]
        write_bytes_atomically(path, ("\n".join(rows) + "\n").encode("utf-8"))
        return [path]
    raise TokarError(f"don't know how to write samples of type {type(examples[0]).__name__}")
