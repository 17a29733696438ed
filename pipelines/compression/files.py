"""Files for `tokar compress` and `tokar decompress`: reading an input file as the data a run
compresses, choosing and checking output paths, and writing the result atomically.

    tokar compress RUN_DIR play.txt              -> play.txt.tkz
    tokar decompress RUN_DIR play.txt.tkz        -> play.txt (the very same bytes)
    tokar compress RUN_DIR shirt.png --class 0   -> shirt.png.tkz
    tokar decompress RUN_DIR shirt.png.tkz       -> shirt.png (PNG, identical pixels)
    tokar compress RUN_DIR digit.wav --class 7   -> digit.wav.tkz (the mu-law codes)
    tokar decompress RUN_DIR digit.wav.tkz       -> digit.wav (16-bit WAV of the decoded codes)
    tokar decompress RUN_DIR x.tkz -o codes.npy  -> the token ids themselves, for any run
                                                    (files of integer arrays: the array)
    tokar export-codec RUN_DIR codecs/           -> codecs/<fingerprint>/ (pipelines/compression/codecs.py)
    tokar decompress codecs/ play.txt.tkz        -> play.txt, with no run at all

Text files are compressed as bytes, whatever their content; images are read with Pillow and come
back as PNG; audio is read by the run's tokenizer (resampled, mixed down) and comes back as a WAV
of its decoded codes. An output path that exists is an error unless `--force` is given; every
output is written to a temporary file and renamed into place, so nothing is ever half-written.

Not here: archives of many files (the container holds a list of examples, but the command line
reads and writes one file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.io.atomic import write_file_atomically
from pipelines.io.safe import check_regular_file, read_bytes, read_image
from plugins.errors import CompressionError, DataError

SUFFIX = ".tkz"


def read_input(path: Path, modality: str) -> Any:
    """INPUT as the data a run of this modality compresses."""
    check_regular_file(path, "input file")
    if modality == "text":
        return read_bytes(path, "input file")
    if modality == "image":
        return read_image(path)
    if modality == "audio":
        return str(path)  # the tokenizer reads, resamples and mixes down
    raise DataError(f"`tokar compress` does not read {modality} files yet.")


def compressed_output(input_path: Path, out: str | None, force: bool) -> Path:
    path = Path(out) if out else input_path.with_name(input_path.name + SUFFIX)
    return _free(path, input_path, force)


def decompressed_output(input_path: Path, out: str | None, force: bool, kind: str,
                        modality: str) -> Path:
    """OUT, or INPUT without .tkz (images: .png, audio: .wav)."""
    if out:
        path = Path(out)
    elif input_path.name.endswith(SUFFIX) and len(input_path.name) > len(SUFFIX):
        path = input_path.with_name(input_path.name[: -len(SUFFIX)])
        if kind == "image":
            path = path.with_suffix(".png")
        elif kind == "array":
            path = path.with_suffix(".npy")
        elif kind == "codes" and modality == "audio":
            path = path.with_suffix(".wav")
    else:
        raise CompressionError(f"{input_path} does not end in {SUFFIX}: name the output with -o OUT.")
    if path.suffix.lower() != ".npy":
        wanted = {"image": ".png"}.get(kind) or \
            (".wav" if kind == "codes" and modality == "audio" else None)
        if wanted and path.suffix.lower() != wanted:
            raise CompressionError(f"{path}: this file holds {'an image' if wanted == '.png' else 'audio'}"
                                   f", written as {wanted} (or .npy for its token ids); name the "
                                   f"output with that suffix.")
    return _free(path, input_path, force)


def _free(path: Path, input_path: Path, force: bool) -> Path:
    if path.resolve() == input_path.resolve():
        raise CompressionError(f"the output {path} is the input; name another output with -o OUT.")
    if path.exists() and not force:
        raise CompressionError(f"{path} already exists; pass --force to overwrite it, or name "
                               "another output with -o OUT.")
    if path.exists() and path.is_dir():
        raise CompressionError(f"{path} is a directory; name an output file with -o OUT.")
    if not path.parent.is_dir():
        raise CompressionError(f"the folder {path.parent} does not exist.")
    return path


def write_bytes(path: Path, data: bytes) -> None:
    write_file_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_output(path: Path, data: Any, kind: str, tokenizer: Any) -> None:
    """Decompressed data to `path` in its own form (.npy: token ids; arrays: the array)."""
    if kind == "array":
        write_file_atomically(path, lambda tmp: _save_npy(tmp, np.asarray(data)))
    elif path.suffix.lower() == ".npy":
        ids = np.asarray(data, dtype=np.int64)
        write_file_atomically(path, lambda tmp: _save_npy(tmp, ids))
    elif kind == "text":
        write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    elif kind == "image":
        write_file_atomically(path, lambda tmp: data.save(tmp, format="PNG"))
    elif kind == "codes" and hasattr(tokenizer, "write_wav"):
        write_file_atomically(path, lambda tmp: tokenizer.write_wav(data, tmp))
    else:
        raise CompressionError(f"cannot write {kind} data to {path}; use -o OUT.npy for the token ids.")


def _save_npy(path: Path, ids: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a bare name
        np.save(f, ids)
