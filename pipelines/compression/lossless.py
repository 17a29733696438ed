"""Data <-> token streams that give the data back exactly, or a clear refusal before anything is
written: what `tokar compress` codes, and how `tokar decompress` rebuilds the data from it.

Each kind of data becomes a flat stream of token ids plus the metadata needed to rebuild it,
and a CRC32 of a canonical byte form of the original that decompression checks:

- text ("text"): a str, or bytes of any content. Bytes are read as UTF-8 with Python's
  `surrogateescape`, so invalid bytes become lone surrogates and come back exactly. Characters the
  tokenizer cannot round-trip (outside a char vocabulary, lone surrogates for byte-level BPE)
  are *escaped*: replaced in the coded text by a character it can code, their positions and code
  points kept in an escape table (varints, zlib) beside the coded stream. The whole coded text
  must then round-trip through the tokenizer (decode(encode(t)) == t), else it is refused.
- images ("image": a PIL image; "array": integer arrays): encoded by the tokenizer, decoded
  back and converted to the original mode, which must give identical pixels, else refused (a
  colour image into a grayscale model, 8-bit pixels into a 17-level model, a palette...).
- codes ("codes"): tokenizers that are lossy but whose codes are stable, encode(decode(ids)) ==
  ids (mu-law audio): the file holds the code stream exactly, and decompression gives the
  decoded data (a waveform at the tokenizer's sample rate). Lossless on the codes only.

Refused: continuous tokenizers (real, waveform: densities over real numbers, no pmf to code
with) and learned codes that are not stable (vqvae, vqgan: lossy reconstructions).

Not here: the container and the coding loop (pipelines/compression/container.py and
coding.py).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from plugins.errors import CompressionError
from tokenizers_ar.base import Tokenizer


@dataclass
class Tokens:
    """One item ready for coding: flat ids, what rebuilds the data, and its checksum."""

    ids: torch.Tensor  # (T,) int64
    kind: str  # "text" | "image" | "array" | "codes"
    meta: dict[str, Any] = field(default_factory=dict)  # JSON: type, mode, size, dtype, rate
    escapes: bytes = b""  # text only: the escape table
    crc32: int = 0
    length: int = 0  # of the original, in its own units (bytes or chars, subpixels, samples)


def compress_mode(tokenizer: Tokenizer) -> str:
    """"exact" (the data comes back) or "codes" (the tokenizer's codes come back), or an error
    saying why this tokenizer's data cannot be compressed losslessly."""
    name = getattr(tokenizer, "name", type(tokenizer).__name__)
    if tokenizer.continuous:
        raise CompressionError(
            f"tokenizer '{name}' is continuous: its values are real numbers modelled by a density, "
            "which has no probability table for an arithmetic coder, and quantizing them would be "
            "lossy. Compress with a discrete tokenizer (mulaw for audio, pixel for images).")
    if tokenizer.lossless:
        return "exact"
    if tokenizer.stable_codes:
        return "codes"
    raise CompressionError(
        f"tokenizer '{name}' is lossy: its decoder reconstructs an approximation of the data and "
        "its learned codes are not stable (a decoded image may encode to other codes), so neither "
        "the data nor its codes would come back exactly. Compress with a lossless tokenizer "
        "(char, bpe, pixel with levels = max_value + 1).")


def to_tokens(tokenizer: Tokenizer, data: Any) -> Tokens:
    """One example as tokens to code, checked to come back exactly (or refused)."""
    if compress_mode(tokenizer) == "codes":
        ids = tokenizer.encode(data).reshape(-1).long()
        meta = {"modality": tokenizer.modality}
        if hasattr(tokenizer, "sample_rate"):
            meta["sample_rate"] = int(tokenizer.sample_rate)
        return Tokens(ids, "codes", meta, crc32=checksum("codes", ids), length=ids.numel())
    if tokenizer.modality == "text":
        return _text(tokenizer, data)
    if tokenizer.modality == "image":
        return _image(tokenizer, data) if isinstance(data, Image.Image) else _array(tokenizer, data)
    raise CompressionError(f"tokenizer '{tokenizer.name}' reads {tokenizer.modality} data, which "
                           "tokar cannot yet check for an exact round trip.")


def from_tokens(tokenizer: Tokenizer, ids: torch.Tensor, kind: str, meta: dict[str, Any],
                escapes: bytes = b"") -> Any:
    """Rebuild the data `to_tokens` saw from its ids and metadata."""
    if kind == "codes":
        return tokenizer.decode(ids)
    if kind == "text":
        text = tokenizer.decode(ids) if ids.numel() else ""
        if escapes:
            text = _unescape(text, escapes)
        return text.encode("utf-8", "surrogateescape") if meta.get("type") == "bytes" else text
    if kind == "image":
        image = tokenizer.decode(ids)
        return image if image.mode == meta["mode"] else \
            image.convert(meta["mode"], dither=Image.Dither.NONE)
    if kind == "array":
        return np.asarray(tokenizer.to_array(ids)).astype(np.dtype(meta["dtype"])).reshape(meta["shape"])
    raise CompressionError(f"unknown item kind {kind!r} in the compressed file; it is damaged or "
                           "from a newer tokar.")


def checksum(kind: str, data: Any) -> int:
    """CRC32 of the canonical bytes of data of this kind (what decompression compares)."""
    if kind == "codes":
        return zlib.crc32(torch.as_tensor(data).reshape(-1).long().numpy().astype("<i8").tobytes())
    if kind == "text":
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
        return zlib.crc32(raw)
    if kind == "image":
        head = f"{data.mode}:{data.size[0]}x{data.size[1]}:".encode()
        return zlib.crc32(np.asarray(data).tobytes(), zlib.crc32(head))
    array = np.ascontiguousarray(data)
    head = f"{array.dtype.str}:{array.shape}:".encode()
    return zlib.crc32(array.tobytes(), zlib.crc32(head))


# -- text -----------------------------------------------------------------------------------------
def _text(tokenizer: Tokenizer, data: Any) -> Tokens:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        text, meta, length = raw.decode("utf-8", "surrogateescape"), {"type": "bytes"}, len(raw)
    elif isinstance(data, str):
        text, meta, length = data, {"type": "str"}, len(data)
    else:
        raise CompressionError(f"this run models text: compress a str or bytes, got "
                               f"{type(data).__name__}.")
    coded, escapes, n_escaped = _escape(tokenizer, text)
    ids = tokenizer.encode(coded).reshape(-1).long() if coded else torch.zeros(0, dtype=torch.long)
    if ids.numel() and tokenizer.decode(ids) != coded:
        raise CompressionError(f"tokenizer '{tokenizer.name}' does not give this text back exactly "
                               "(decode(encode(text)) differs), so it cannot compress it losslessly.")
    if n_escaped:
        meta["escaped"] = n_escaped  # characters coded through the escape table
    return Tokens(ids, "text", meta, escapes, checksum("text", data if meta["type"] == "bytes"
                                                        else text), length)


def _round_trips(tokenizer: Tokenizer, char: str) -> bool:
    try:
        return tokenizer.decode(tokenizer.encode(char)) == char
    except Exception:  # a character the tokenizer cannot take at all (lone surrogates...)
        return False


def _escape(tokenizer: Tokenizer, text: str) -> tuple[str, bytes, int]:
    """The text with every character the tokenizer cannot round-trip replaced by one it can,
    the escape table that undoes it (b"" when nothing needed escaping), and how many."""
    if not text:
        return text, b"", 0
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    bad = [int(c) for c in np.unique(codes) if not _round_trips(tokenizer, chr(c))]
    if not bad:
        return text, b"", 0
    substitute = _substitute(tokenizer, text)
    positions = np.flatnonzero(np.isin(codes, bad))
    coded = codes.copy()
    coded[positions] = ord(substitute)
    gaps = np.diff(positions, prepend=0)
    table = _varints([len(positions), *gaps.tolist(), *codes[positions].tolist()])
    return coded.tobytes().decode("utf-32-le"), zlib.compress(table, 9), len(positions)


def _substitute(tokenizer: Tokenizer, text: str) -> str:
    """A character the tokenizer codes exactly, to stand in for escaped ones."""
    for char in (" ", "e", "\n", "0", "a", *sorted(set(text[:10000]))):
        if _round_trips(tokenizer, char):
            return char
    for i in range(tokenizer.vocab_size):
        char = tokenizer.decode(torch.tensor([i]))
        if len(char) == 1 and _round_trips(tokenizer, char):
            return char
    raise CompressionError(f"tokenizer '{tokenizer.name}' round-trips no single character, so "
                           "unseen characters cannot be escaped.")


def _unescape(text: str, escapes: bytes) -> str:
    try:
        values = _read_varints(zlib.decompress(escapes))
    except (zlib.error, ValueError) as exc:
        raise CompressionError("the escape table of the compressed file is damaged.") from exc
    n = values[0] if values else 0
    if len(values) != 1 + 2 * n:
        raise CompressionError("the escape table of the compressed file is damaged.")
    positions = np.cumsum(values[1 : 1 + n], dtype=np.int64)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").copy()
    if n and (positions[-1] >= len(codes) or max(values[1 + n :]) > 0x10FFFF):
        raise CompressionError("the escape table of the compressed file does not fit its text.")
    codes[positions] = values[1 + n :]
    return codes.tobytes().decode("utf-32-le", "surrogatepass")


def _varints(values: list[int]) -> bytes:
    out = bytearray()
    for v in values:
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _read_varints(data: bytes) -> list[int]:
    values, v, shift = [], 0, 0
    for byte in data:
        v |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            values.append(v)
            v, shift = 0, 0
    if shift:
        raise ValueError("a varint is cut short")
    return values


# -- images ---------------------------------------------------------------------------------------
def _image(tokenizer: Tokenizer, image: Image.Image) -> Tokens:
    ids = tokenizer.encode(image).reshape(-1).long()
    meta = {"mode": image.mode, "size": list(image.size)}
    back = from_tokens(tokenizer, ids, "image", meta)
    if back.size != image.size or not np.array_equal(np.asarray(back), np.asarray(image)):
        name = getattr(image, "filename", "") or "this image"
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            raise CompressionError(
                f"{name}: a transparent {image.mode} image; the model has no alpha channel, so it "
                "cannot come back identical. Composite it first (PIL: Image.alpha_composite on a "
                "background, then .convert('RGB')) and compress that.")
        raise CompressionError(
            f"{name}: this {image.mode} image would not come back identical through tokenizer "
            f"'{tokenizer.name}' ({_image_settings(tokenizer)}); convert it to what the model was "
            "trained on (the same size, grayscale or RGB, 8 bits) or use a run trained on such images.")
    return Tokens(ids, "image", meta, crc32=checksum("image", image), length=ids.numel())


def _image_settings(tokenizer: Tokenizer) -> str:
    config = getattr(tokenizer, "config", None)
    levels = getattr(config, "levels", None)
    shape = "x".join(map(str, tokenizer.layout.shape)) if tokenizer.is_fitted else "?"
    return f"{shape} grid" + (f", {levels} levels per subpixel" if levels else "")


def _array(tokenizer: Tokenizer, data: Any) -> Tokens:
    array = np.asarray(data.numpy() if torch.is_tensor(data) else data)
    if not hasattr(tokenizer, "to_array") or not np.issubdtype(array.dtype, np.integer):
        raise CompressionError(f"tokenizer '{tokenizer.name}' compresses PIL images or integer "
                               f"arrays; got {type(data).__name__} of {array.dtype}.")
    ids = tokenizer.encode(array).reshape(-1).long()
    meta = {"dtype": array.dtype.str, "shape": list(array.shape)}
    if not np.array_equal(from_tokens(tokenizer, ids, "array", meta), array):
        raise CompressionError(f"this array would not come back identical through tokenizer "
                               f"'{tokenizer.name}' ({_image_settings(tokenizer)}).")
    return Tokens(ids, "array", meta, crc32=checksum("array", array), length=ids.numel())
