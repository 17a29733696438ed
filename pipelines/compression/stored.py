"""The stored form of a compressed file: the data kept as it is, when coding would not shrink it
(an untrained model, random bytes, a file of a few bytes). No model is needed to read it back.

Per item kind, the payload holds:
- text: its bytes (str: UTF-8);
- image: a PNG of it (lossless, any mode PIL writes to PNG: 1, L, LA, P, RGB, RGBA, I;16...);
  an image whose PNG does not give back the same pixels and mode is not stored (it stays coded);
- array: its raw bytes, little-endian, in the dtype and shape its metadata names.
Codes (mu-law audio) are never stored: rebuilding audio from them needs the tokenizer.

Reading is as careful as the coded path: sizes are checked against the metadata before anything
is allocated, and a PNG may not claim more pixels than its bytes can hold (deflate expands at
most 1032 to 1), so an edited header cannot ask for gigabytes.

Not here: the container around it (container.py), the CRC32 of the data (lossless.checksum).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageMode

from pipelines.compression.lossless import Tokens, checksum
from plugins.errors import CompressionError

STORABLE = ("text", "image", "array")
DEFLATE_RATIO = 1100  # deflate's largest expansion is 1032:1; PNG adds a filter byte a row


def stored_bytes(example: Any, item: Tokens) -> bytes | None:
    """What the stored form keeps of one example, or None when it cannot keep it exactly."""
    if item.kind == "text":
        return text_bytes(example)
    if item.kind == "array":
        array = np.ascontiguousarray(example)
        return array.astype(array.dtype.newbyteorder("<")).tobytes()
    if item.kind == "image":
        buffer = io.BytesIO()
        try:
            example.save(buffer, format="PNG", compress_level=9)
            back = _open_png(buffer.getvalue(), example.mode, list(example.size))
        except (OSError, ValueError, KeyError, CompressionError):
            return None  # a mode PNG cannot hold exactly: the file stays coded
        return buffer.getvalue() if checksum("image", back) == item.crc32 else None
    return None


def text_bytes(data: Any) -> bytes:
    return bytes(data) if not isinstance(data, str) else data.encode("utf-8", "surrogatepass")


def header_items(items: Sequence[Tokens], raws: Sequence[bytes]) -> list[dict[str, Any]]:
    """The header rows of stored items: kind, metadata, length and bytes in the payload."""
    return [{"kind": i.kind, "meta": {"type": i.meta["type"]} if i.kind == "text" else i.meta,
             "length": i.length, "stored": len(r)} for i, r in zip(items, raws, strict=True)]


def unstore(item: dict[str, Any], raw: bytes) -> Any:
    """One stored item back as the data it was (checked by the caller's CRC32)."""
    kind, meta = item["kind"], item["meta"]
    if kind == "text":
        if meta["type"] == "bytes":
            return raw
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise CompressionError("a stored text item is not UTF-8; the file was damaged or "
                                   "edited.") from exc
    if kind == "array":
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        shape = [int(n) for n in meta["shape"]]
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(raw):
            raise CompressionError(f"a stored array of shape {shape} ({dtype}) does not fill its "
                                   f"{len(raw):,} bytes; the file was damaged or edited.")
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(shape)
    if kind == "image":
        return _open_png(raw, meta["mode"], meta["size"])
    raise CompressionError(f"a stored file cannot hold {kind} items; it was damaged or edited.")


def _open_png(raw: bytes, mode: str, size: list[int]) -> Image.Image:
    """The PNG in `raw`, which must be a `mode` image of `size`, decoded only once its claimed
    size fits what its bytes can hold."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=["PNG"])
            if image.mode != mode or list(image.size) != list(size):
                raise CompressionError(f"a stored image is {image.mode} {image.size}, its header "
                                       f"says {mode} {tuple(size)}; the file was damaged or edited.")
            w, h = image.size
            bits = {"1": 1, "I;16": 16, "I": 32, "F": 32}.get(mode, 8)
            if h * (w * bits * len(ImageMode.getmode(mode).bands) // 8 + 1) > \
                    DEFLATE_RATIO * len(raw) + (1 << 16):
                raise CompressionError(f"a stored {w}x{h} image cannot come from "
                                       f"{len(raw):,} bytes; the file was damaged or edited.")
            image.load()
    except CompressionError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise CompressionError(f"a stored image does not decode ({type(exc).__name__}); the file "
                               "was damaged or edited.") from exc
    return image
