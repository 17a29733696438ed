"""The compressed file's header read defensively: a file whose CRC32 is valid may still have been
edited (the CRC is no signature), so every field is type-checked and bounded before anything is
allocated or looped over, and sizes are checked against the payload and the machine's memory.
Whatever the header says, reading it ends in a one-line CompressionError, never a traceback, a
huge allocation or a hang.

    header = read_header(blob[9 : 9 + H], payload_size, version)   # checked, items as rows

Bounds: the JSON header inflates to at most MAX_HEADER bytes (a zlib bomb stops there);
batch_size <= MAX_BATCH_SIZE, threads <= MAX_THREADS, block_length <= MAX_BLOCK_LENGTH; the
items' escape tables and the batches' words add up to the payload exactly (stored files: the
items' stored bytes); the total token count is at most what the payload's bits can hold at the
coder's highest probability (`max_tokens`), and its arrays must fit in memory (check_fits).

Not here: the container's layout (container.py), checks that need the model (vocabulary size,
class count: container.decompress).
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import numpy as np

from pipelines.compression.stored import STORABLE
from plugins.errors import CompressionError, ResourceError
from plugins.resources import check_fits

MAX_HEADER = 64 << 20  # bytes of inflated JSON: 10,000 images' rows take well under 1 MiB
MAX_ITEMS = 10_000_000
MAX_BATCH_SIZE = 1 << 16
MAX_THREADS = 1024
MAX_BLOCK_LENGTH = 1 << 31
MAX_COUNT = 1 << 48  # tokens, lengths, words: far above any file, far below overflow
KINDS = ("text", "image", "array", "codes")
ITEM_FIELDS = {"kind", "meta", "length", "tokens", "cond", "escapes", "stored"}


def bad(field: str, why: str) -> CompressionError:
    return CompressionError(f"the compressed file's header is invalid ({field} {why}); the file "
                            "was damaged or edited, nothing was decoded.")


def inflate(data: bytes) -> bytes:
    """The header's zlib stream, inflated to at most MAX_HEADER bytes."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_HEADER)
    except zlib.error as exc:
        raise bad("zlib stream", f"does not inflate: {exc}") from exc
    if d.unconsumed_tail:
        raise bad("JSON", f"inflates to more than {MAX_HEADER:,} bytes")
    if not d.eof:
        raise bad("zlib stream", "is cut short")
    return out


def _int(value: Any, field: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise bad(field, f"must be an integer in [{lo}, {hi}], got {_show(value)}")
    return value


def _str(value: Any, field: str, choices: tuple[str, ...] | None = None, max_len: int = 256) -> str:
    if not isinstance(value, str) or len(value) > max_len or (choices and value not in choices):
        want = f"one of {', '.join(choices)}" if choices else f"a string of at most {max_len} chars"
        raise bad(field, f"must be {want}, got {_show(value)}")
    return value


def _dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(field, f"must be an object, got {_show(value)}")
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise bad(field, f"must be true or false, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_header(data: bytes, payload_size: int, version: int) -> dict[str, Any]:
    """The checked header, `items` as one dict per example."""
    try:
        header = json.loads(inflate(data).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise bad("JSON", f"does not parse: {str(exc)[:60]}") from exc
    h = _dict(header, "header")
    h["list"] = _bool(h.get("list", False), "list")
    h["stored"] = _bool(h.get("stored", False), "stored")
    _int(h.get("crc32"), "crc32", 0, 2**32 - 1)
    h["items"] = _items(_dict(h.get("items"), "items"), payload_size)
    if h["stored"]:
        if sum(i["stored"] for i in h["items"]) != payload_size:
            raise bad("items.stored", "do not add up to the payload's size")
        if any(i["kind"] not in STORABLE for i in h["items"]):
            raise bad("items.kind", f"must be one of {', '.join(STORABLE)} in a stored file")
        return h
    for part in ("tokenizer", "prior"):
        p = _dict(h.get(part), part)
        _str(p.get("name"), f"{part}.name")
        if not (part == "prior" and p.get("fingerprint") is None):
            _str(p.get("fingerprint"), f"{part}.fingerprint")
    if h.get("run") is not None:
        _str(h["run"], "run", max_len=4096)
    _str(h.get("mode"), "mode", ("exact", "codes"))
    c = _dict(h.get("coder"), "coder")
    _int(c.get("precision"), "coder.precision", 1, 32)
    if c.get("block_length") is not None:
        _int(c["block_length"], "coder.block_length", 1, MAX_BLOCK_LENGTH)
    c.setdefault("block_length", None)
    _int(c.get("batch_size"), "coder.batch_size", 1, MAX_BATCH_SIZE)
    _int(c.get("threads"), "coder.threads", 1, MAX_THREADS)
    _str(c.get("device"), "coder.device", max_len=32)
    c["portable"] = _bool(c.get("portable", False), "coder.portable") if version >= 2 else False
    if c["portable"]:
        _str(c.get("codec"), "coder.codec", max_len=64)
    batches = h.get("batches")
    if not isinstance(batches, list) or len(batches) > MAX_ITEMS:
        raise bad("batches", f"must be a list of at most {MAX_ITEMS:,} word counts")
    words = sum(_int(w, "batches[]", 0, MAX_COUNT) for w in batches)
    if sum(i["escapes"] for i in h["items"]) + 4 * words != payload_size:
        raise bad("batches", "and the escape tables do not add up to the payload's size")
    return h


def _items(columns: dict[str, Any], payload_size: int) -> list[dict[str, Any]]:
    n = _int(columns.get("n"), "items.n", 0, MAX_ITEMS)
    same, each = _dict(columns.get("same"), "items.same"), _dict(columns.get("each"), "items.each")
    if not set(same) | set(each) <= ITEM_FIELDS:
        raise bad("items", f"has unknown fields {sorted(set(same) | set(each) - ITEM_FIELDS)}")
    for name, values in each.items():
        if not isinstance(values, list) or len(values) != n:
            raise bad(f"items.each.{name}", f"must be a list of {n} values")
    rows = []
    for k in range(n):
        row = {**same, **{f: v[k] for f, v in each.items()}}
        kind = _str(row.get("kind"), "items.kind", KINDS)
        _meta(kind, _dict(row.get("meta"), "items.meta"))
        _int(row.get("length"), "items.length")
        _int(row.get("tokens", 0), "items.tokens")
        if row.get("cond") is not None:
            _int(row["cond"], "items.cond", 0, 2**31)
        row.setdefault("cond", None)
        row["escapes"] = _int(row.get("escapes", 0), "items.escapes", 0, payload_size)
        row["stored"] = _int(row.get("stored", 0), "items.stored", 0, payload_size)
        rows.append(row)
    return rows


def _meta(kind: str, meta: dict[str, Any]) -> None:
    if kind == "text":
        _str(meta.get("type"), "items.meta.type", ("str", "bytes"))
        if "escaped" in meta:
            _int(meta["escaped"], "items.meta.escaped")
    elif kind == "image":
        _str(meta.get("mode"), "items.meta.mode", max_len=16)
        size = meta.get("size")
        if not isinstance(size, list) or len(size) != 2:
            raise bad("items.meta.size", f"must be [width, height], got {_show(size)}")
        for v in size:
            _int(v, "items.meta.size", 1, 1 << 16)
    elif kind == "array":
        try:
            ok = np.issubdtype(np.dtype(_str(meta.get("dtype"), "items.meta.dtype", max_len=8)),
                               np.integer)
        except TypeError:
            ok = False
        if not ok:
            raise bad("items.meta.dtype", f"must be an integer dtype, got {_show(meta.get('dtype'))}")
        shape = meta.get("shape")
        if not isinstance(shape, list) or len(shape) > 8:
            raise bad("items.meta.shape", f"must be a list of at most 8 sizes, got {_show(shape)}")
        for v in shape:
            _int(v, "items.meta.shape", 0, 1 << 31)
    elif "sample_rate" in meta:
        _int(meta["sample_rate"], "items.meta.sample_rate", 1, 10**7)


def check_tokens(items: list[dict[str, Any]], words: int, batches: int, vocab_size: int,
                 precision: int, block_length: int | None) -> None:
    """Refuse token counts the payload cannot hold, and arrays that would not fit in memory.

    A coded token costs at least -log2 of the largest probability an integer pmf can give,
    1 - (V - 1) / 2**precision, so `words` 32-bit words (plus a flush of two per batch) hold at
    most that many tokens: a header claiming more is edited, and decoding it would only run
    long."""
    total = sum(i["tokens"] for i in items)
    smallest = -math.log2(1 - (max(vocab_size, 2) - 1) / 2**precision)
    limit = math.ceil(32 * (words + 2 * batches) / smallest) + len(items)
    if total > limit:
        raise bad("items.tokens", f"claim {total:,} tokens; its {words:,} words hold at most "
                  f"{limit:,}")
    blocks = sum(-(-i["tokens"] // (block_length or max(i["tokens"], 1))) for i in items)
    try:  # the decoded ids (int64) and the block table (a few hundred bytes a block)
        check_fits(8.0 * total + 300.0 * blocks, "decompressing this file",
                   "decompress it on a larger machine.")
    except ResourceError as exc:
        raise CompressionError(str(exc)) from exc
