"""Lossless compression with a trained pipeline: the container format, and compress/decompress
on top of the coding loop (pipelines/compression/coding.py) and the exact data <-> token streams
(pipelines/compression/lossless.py).

    blob = Pipeline.load(run).compress(open("play.txt", "rb").read())   # or tokar compress RUN FILE
    data = Pipeline.load(run).decompress(blob)                          # the very same bytes

The container (format version 1), all integers little-endian:

    offset  size  field
    0       4     magic b"TOKZ"
    4       1     format version (1)
    5       4     H, the header's length in bytes (uint32)
    9       H     header: UTF-8 JSON (below), zlib-compressed
    9+H     ...   payload: every item's escape table (text only), in item order, then every
                  batch's range-coder stream (uint32 words), in batch order
    end-4   4     CRC32 of every byte before it

Every version keeps the magic, the version byte and the trailing CRC32 where they are, so any
tokar can tell a damaged file (CRC mismatch) from one of a newer version (version byte).

The header holds:
- `tokenizer`, `prior`: {"name", "fingerprint"}: the tokenizer's own fingerprint and a SHA-256
  of the prior's class, config and weights, so decompressing with another model is an error that
  names both (`run`: the run directory's name, as a hint for the message);
- `mode`: "exact" (the data comes back) or "codes" (the tokenizer's codes come back: mu-law);
- `coder`: {"precision": 16 (bits of the integer pmfs), "block_length" (tokens per block, null
  for whole items), "batch_size" (blocks coded in parallel), "threads" (torch threads inside
  coding), "device" ("cpu")}: everything that fixes the coding loop's arithmetic;
- `items`: one row per example, stored as columns ({"n": rows, "same": {field: the value every
  row shares}, "each": {field: [one value per row]}}) so that many images share one header.
  Fields: "kind" (text, image, array, codes), "meta" (what rebuilds it: str or bytes, image mode
  and size, array dtype and shape, sample rate), "length" (of the original, in bytes or
  characters, subpixels, samples), "tokens", "cond" (its class label for conditional priors,
  else null), "escapes" (bytes of its escape table);
- `crc32`: of the original data, checked after decoding: the CRC32 of every item's CRC32 (of its
  bytes; of its pixels with mode and size; of its codes), in order;
- `batches`: the block table: the number of 32-bit words of each batch's stream. The blocks
  themselves follow from the items' token counts, block_length and batch_size
  (`entropy_coding.plan_blocks`), so the table is not stored twice;
- `list`: whether the file holds a list of examples (`compress_all`) or one (`compress`).

Not here: seeking into a batch (batches are independent, so parallel or partial decoding is a
matter of reading the block table); files larger than memory; portability of files between
machines whose float kernels differ (see coding.py).
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipelines.compression.coding import (
    PRECISION,
    CodingStats,
    batches,
    decode_batch,
    encode_batch,
    fixed_threads,
    plan_blocks,
)
from pipelines.compression.lossless import Tokens, checksum, compress_mode, from_tokens, to_tokens
from plugins.errors import CompressionError
from priors.base import Prior
from tokenizers_ar.base import Tokenizer

logger = logging.getLogger(__name__)

MAGIC = b"TOKZ"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sBI")  # magic, version, header length
_CRC = struct.Struct("<I")
DEFAULT_BLOCK_LENGTH = 2048  # tokens per block for sequences (grids: one image per block)
DEFAULT_BATCH_SIZE = 64  # blocks coded in parallel


@dataclass
class Settings:
    block_length: int | None = None  # None: DEFAULT_BLOCK_LENGTH for sequences
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int = 1


# -- compress -------------------------------------------------------------------------------------
def compress(prior: Prior, tokenizer: Tokenizer, examples: Sequence[Any],
             conds: Sequence[int | None] | None = None, settings: Settings | None = None,
             many: bool = True, run: str | None = None, stats: CodingStats | None = None) -> bytes:
    """The container holding `examples`, coded under `prior`. Every example is checked to come
    back exactly (pipelines/compression/lossless.py) before any coding starts."""
    settings = settings or Settings()
    mode = compress_mode(tokenizer)
    if mode == "codes":
        logger.warning("tokenizer '%s' is lossy: the file holds its codes exactly, and "
                       "decompression gives the data they decode to, not the original.", tokenizer.name)
    conds = _check_conds(prior, conds, len(examples))
    _check_settings(settings)
    prior.eval()
    items = [to_tokens(tokenizer, x) for x in examples]
    for item in items:
        if item.ids.numel() and (item.ids.min() < 0 or item.ids.max() >= prior.vocab_size):
            raise CompressionError(f"tokenizer '{tokenizer.name}' made ids outside the prior's "
                                   f"vocabulary [0, {prior.vocab_size}).")
    block_length = _block_length(prior, settings)
    blocks = plan_blocks([i.ids.numel() for i in items], block_length, list(conds))
    streams = []
    with fixed_threads(settings.threads):
        for batch in batches(blocks, settings.batch_size):
            L = max(b.length for b in batch)
            tokens = np.zeros((len(batch), L), dtype=np.int64)
            for row, b in enumerate(batch):
                tokens[row, : b.length] = items[b.item].ids[b.start : b.start + b.length].numpy()
            streams.append(encode_batch(prior, batch, tokens, stats))
    header = {
        "tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint()},
        "prior": {"name": prior.name, "fingerprint": prior.fingerprint()},
        "run": run,
        "mode": mode,
        "coder": {"precision": PRECISION, "block_length": block_length,
                  "batch_size": settings.batch_size, "threads": settings.threads,
                  "device": _device(prior)},
        "items": _columns([{"kind": i.kind, "meta": i.meta, "length": i.length,
                            "tokens": i.ids.numel(), "cond": c, "escapes": len(i.escapes)}
                           for i, c in zip(items, conds, strict=True)]),
        "crc32": _combined([i.crc32 for i in items]),
        "batches": [int(s.size) for s in streams],
        "list": many,
    }
    payload = b"".join([*(i.escapes for i in items), *(s.astype("<u4").tobytes() for s in streams)])
    head = zlib.compress(json.dumps(header, separators=(",", ":"), sort_keys=True).encode(), 9)
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head + payload
    return body + _CRC.pack(zlib.crc32(body))


def _columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Item fields as columns: a value all items share is stored once (`same`), the others as
    one list per field (`each`), so a file of 10,000 images does not repeat 10,000 headers."""
    fields = rows[0].keys() if rows else []
    same = {f: rows[0][f] for f in fields if all(r[f] == rows[0][f] for r in rows)}
    return {"n": len(rows), "same": same,
            "each": {f: [r[f] for r in rows] for f in fields if f not in same}}


def _rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    n = columns["n"]
    if any(len(v) != n for v in columns["each"].values()):
        raise ValueError("item columns of different lengths")
    return [{**columns["same"], **{f: v[k] for f, v in columns["each"].items()}} for k in range(n)]


def _combined(crcs: list[int]) -> int:
    """One CRC32 for the whole file's data: the CRC32 of every item's CRC32, in order."""
    return zlib.crc32(b"".join(_CRC.pack(c) for c in crcs))


def _check_conds(prior: Prior, conds: Sequence[int | None] | None, n: int) -> list[int | None]:
    classes = prior.num_classes
    if not classes:
        if conds is not None and any(c is not None for c in conds):
            raise CompressionError("this prior is unconditional (n_classes=0): it takes no class "
                                   "label; leave --class out.")
        return [None] * n
    if conds is None or any(c is None for c in conds):
        raise CompressionError(f"this prior is class-conditional ({classes} classes): pass each "
                               "example's class (--class C); it is stored in the file.")
    conds = [int(c) for c in conds]
    if len(conds) != n or any(not 0 <= c < classes for c in conds):
        raise CompressionError(f"class labels must be {n} values in [0, {classes}).")
    return conds


def _check_settings(s: Settings) -> None:
    if s.block_length is not None and s.block_length < 1:
        raise CompressionError(f"block length must be at least 1 token, got {s.block_length}.")
    if s.batch_size < 1 or s.threads < 1:
        raise CompressionError(f"batch size and threads must be at least 1, got {s.batch_size} "
                               f"and {s.threads}.")


def _block_length(prior: Prior, s: Settings) -> int | None:
    if prior.layout.kind == "grid":  # a grid prior models whole images: one block per image
        return None
    return s.block_length or DEFAULT_BLOCK_LENGTH


def _device(prior: Prior) -> str:
    return next(prior.parameters()).device.type


# -- decompress -----------------------------------------------------------------------------------
@dataclass
class Container:
    header: dict[str, Any]
    escapes: list[bytes]
    streams: list[np.ndarray]


def read_container(blob: bytes) -> Container:
    """Parse and check a compressed file: magic, CRC32, version, then the header's sections."""
    blob = bytes(blob)
    if len(blob) < _PREFIX.size + _CRC.size or blob[:4] != MAGIC:
        raise CompressionError("not a tokar compressed file (no TOKZ magic bytes at its start); "
                               "pass a file made by `tokar compress`.")
    (crc,) = _CRC.unpack(blob[-_CRC.size :])
    if zlib.crc32(blob[: -_CRC.size]) != crc:
        raise CompressionError("the compressed file is damaged or truncated (its CRC32 does not "
                               "match); nothing was decoded.")
    _, version, n = _PREFIX.unpack(blob[: _PREFIX.size])
    if version > FORMAT_VERSION:
        raise CompressionError(f"the compressed file has format version {version}, newer than this "
                               f"tokar reads ({FORMAT_VERSION}); upgrade tokar to decompress it.")
    try:
        header = json.loads(zlib.decompress(blob[_PREFIX.size : _PREFIX.size + n]).decode())
        header["items"] = _rows(header["items"])
        offset = _PREFIX.size + n
        escapes = []
        for item in header["items"]:
            escapes.append(blob[offset : offset + item["escapes"]])
            offset += item["escapes"]
        streams = []
        for words in header["batches"]:
            streams.append(np.frombuffer(blob, dtype="<u4", count=words, offset=offset).astype(np.uint32))
            offset += 4 * words
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, zlib.error) as exc:
        raise CompressionError(f"the compressed file's header is damaged ({exc}).") from exc
    if offset != len(blob) - _CRC.size:
        raise CompressionError("the compressed file's sections do not add up to its size; it is "
                               "damaged.")
    return Container(header, escapes, streams)


def decompress(prior: Prior, tokenizer: Tokenizer, blob: bytes, run: str | None = None,
               codes: bool = False) -> tuple[list[Any], bool]:
    """(the examples, whether the file holds a list) from a container made by `compress` with
    this very tokenizer and prior. `codes`: the token ids instead of the data."""
    c = read_container(blob)
    h = c.header
    _check_model(h, prior, tokenizer, run)
    coder = h["coder"]
    if coder["precision"] != PRECISION:
        raise CompressionError(f"the file's pmfs have {coder['precision']} bits of precision; this "
                               f"tokar codes with {PRECISION}.")
    if coder["device"] != _device(prior):
        raise CompressionError(f"the file was coded on {coder['device']}, this prior runs on "
                               f"{_device(prior)}: decode on the same kind of device, since float "
                               "kernels differ between them.")
    items = h["items"]
    blocks = plan_blocks([i["tokens"] for i in items], coder["block_length"],
                         [i["cond"] for i in items])
    planned = batches(blocks, coder["batch_size"])
    if len(planned) != len(c.streams):
        raise CompressionError("the compressed file's block table does not match its items; it is "
                               "damaged.")
    ids = [np.zeros(i["tokens"], dtype=np.int64) for i in items]
    prior.eval()
    with fixed_threads(coder["threads"]):
        for batch, words in zip(planned, c.streams, strict=True):
            tokens = decode_batch(prior, batch, words)
            for row, b in enumerate(batch):
                ids[b.item][b.start : b.start + b.length] = tokens[row, : b.length]
    out, crcs = [], []
    for k, (item, escapes) in enumerate(zip(items, c.escapes, strict=True)):
        tensor = torch.from_numpy(ids[k])
        data = from_tokens(tokenizer, tensor, item["kind"], item["meta"], escapes)
        crcs.append(checksum("codes", tensor) if item["kind"] == "codes" else checksum(item["kind"], data))
        out.append(tensor if codes else data)
    if _combined(crcs) != h["crc32"]:
        raise CompressionError(
            "the decoded data does not match the file's CRC32: the model computed different "
            "probabilities than when compressing (another machine or device, a changed library) "
            "or the file is damaged. Nothing was written.")
    return out, bool(h.get("list"))


def _check_model(h: dict[str, Any], prior: Prior, tokenizer: Tokenizer, run: str | None) -> None:
    theirs = (h["tokenizer"]["fingerprint"], h["prior"]["fingerprint"])
    ours = (tokenizer.fingerprint(), prior.fingerprint())
    if theirs != ours:
        where = f" (run '{h['run']}')" if h.get("run") else ""
        here = f" (run '{run}')" if run else ""
        raise CompressionError(
            f"this file was compressed with another model{where}: tokenizer "
            f"{h['tokenizer']['name']} {theirs[0]}, prior {h['prior']['name']} {theirs[1]}; this "
            f"run{here} has tokenizer {tokenizer.name} {ours[0]}, prior {prior.name} {ours[1]}. "
            "Decompress it with the run that compressed it, loaded at the same precision.")


__all__ = ["FORMAT_VERSION", "MAGIC", "Settings", "Tokens", "compress", "decompress",
           "read_container"]
