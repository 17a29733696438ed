"""Lossless compression with a trained pipeline: the container format, and compress/decompress
on top of the coding loop (pipelines/compression/coding.py) and the exact data <-> token streams
(pipelines/compression/lossless.py).

    blob = Pipeline.load(run).compress(open("play.txt", "rb").read())   # or tokar compress RUN FILE
    data = Pipeline.load(run).decompress(blob)                          # the very same bytes

The container (format version 2; version 1 files are still read), integers little-endian:

    offset  size  field
    0       4     magic b"TOKZ"
    4       1     format version (2)
    5       4     H, the header's length in bytes (uint32)
    9       H     header: UTF-8 JSON (below), zlib-compressed; H = 0: a stored file of bytes
    9+H     ...   payload: every item's escape table (text only), in item order, then every
                  batch's range-coder stream (uint32 words), in batch order; stored files: the
                  items' bytes
    end-4   4     CRC32 of every byte before it

Every version keeps the magic, the version byte and the trailing CRC32 where they are, so any
tokar can tell a damaged file (CRC mismatch) from one of a newer version (version byte).

The header (version 2) holds:
- `tokenizer`: {"name", "fingerprint"}: the (ordered) tokenizer's fingerprint;
- `prior`: {"name", "fingerprint"}: SHA-256 of the prior's class, config and weights when the
  file was made (the float path decodes only with that very prior);
- `run`: the run directory's name, a hint for messages;
- `mode`: "exact" (the data comes back) or "codes" (the tokenizer's codes come back: mu-law);
- `coder`: everything that fixes the coding loop: "precision" (16, bits of the integer pmfs),
  "block_length" (tokens per block, null for whole items), "batch_size" (blocks coded in
  parallel), "threads" (torch threads inside coding: a float-path file decodes with them again,
  a portable one with any), "device" ("cpu"), "portable" (true: the pmfs came from the
  integer-exact coder, the same on every machine; false: from the float prior, same kind of
  machine only), "codec" (portable: the frozen codec's fingerprint,
  RUN/codecs/<codec>/, see codecs.py; else null);
- `items`: one row per example, stored as columns ({"n": rows, "same": {field: the value every
  row shares}, "each": {field: [one value per row]}}) so that many images share one header.
  Fields: "kind" (text, image, array, codes), "meta" (what rebuilds it: {"type": "str" or
  "bytes", "escaped"} for text, image {"mode", "size"}, array {"dtype", "shape"}, codes
  {"modality", "sample_rate"}), "length" (of the original, in bytes or characters, subpixels,
  samples), "tokens", "cond" (its class label for conditional priors, else null), "escapes"
  (bytes of its escape table), "stored" (stored files: bytes of the item in the payload);
- `crc32`: of the original data, checked after decoding: the CRC32 of every item's CRC32 (of its
  bytes; of its pixels with mode and size; of its codes), in order;
- `batches`: the block table: the number of 32-bit words of each batch's stream. The blocks
  themselves follow from the items' token counts, block_length and batch_size
  (`coding.plan_blocks`), so the table is not stored twice;
- `list`: whether the file holds a list of examples (`compress_all`) or one (`compress`);
- `stored`: true when coding would have made the file larger than the data: the payload is the
  items' bytes (text: UTF-8; images: PNG; arrays: raw, stored.py), no model is needed to read it
  back. One bytes item is stored with no header at all (H = 0): such a file is its data plus 13
  bytes.

Version 1 is the same without `coder.portable`, `coder.codec` and `stored` (always the float
path). Every field is bounded and type-checked before use (header.py): an edited header with a
valid CRC32 is a one-line error, not a crash, a huge allocation or a hang.

Not here: seeking into a batch (batches are independent, so parallel or partial decoding is a
matter of reading the block table); files larger than memory; the frozen codecs (codecs.py).
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipelines.compression.codecs import Codec
from pipelines.compression.coding import (
    PRECISION,
    CodingStats,
    FloatStepper,
    Stepper,
    batches,
    decode_batch,
    encode_batch,
    fixed_threads,
    plan_blocks,
)
from pipelines.compression.header import check_tokens, read_header
from pipelines.compression.lossless import Tokens, checksum, compress_mode, from_tokens, to_tokens
from pipelines.compression.stored import STORABLE, header_items, stored_bytes, unstore
from plugins.errors import CompressionError
from priors.base import Prior

logger = logging.getLogger(__name__)

MAGIC = b"TOKZ"
FORMAT_VERSION = 2
_PREFIX = struct.Struct("<4sBI")  # magic, version, header length
_CRC = struct.Struct("<I")
STORED_OVERHEAD = _PREFIX.size + _CRC.size  # a stored bytes file: its data plus 13 bytes
DEFAULT_BLOCK_LENGTH = 2048  # tokens per block for sequences (grids: one image per block)
DEFAULT_BATCH_SIZE = 64  # blocks coded in parallel
# portable coders that know their state's size get as many blocks as fit in this much state:
# wider batches run faster (one batched step serves them all) and do not change the bits
STATE_BUDGET = 256 << 20
MAX_DEFAULT_BATCH_SIZE = 1024

Progress = Callable[[int, int], None]  # (tokens just coded, tokens in all)


@dataclass
class Settings:
    block_length: int | None = None  # None: DEFAULT_BLOCK_LENGTH for sequences
    batch_size: int | None = None  # None: `default_batch_size`
    # torch threads while coding. Portable: None, every thread this process has (the integer
    # sums do not depend on them). Float path: None means 1; the count is stored, and decoding
    # uses it again, since a reduction split over other threads may round differently.
    threads: int | None = None


@dataclass
class Model:
    """What codes a file: the source of pmfs and the names the header keeps of it."""

    stepper: Stepper
    tokenizer: Any  # ordered as the prior reads
    prior_name: str
    prior_fingerprint: str | None
    layout_kind: str
    codec: str | None = None  # portable: the frozen codec's fingerprint
    max_block_length: int | None = None
    default_block_length: int | None = None  # the coder's, when the user names none
    state_bytes_per_block: int | None = None  # the coder's state per block: sizes the batch
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


def float_model(prior: Prior, tokenizer: Any) -> Model:
    """The float path: the prior's own forward (decodes on the same kind of machine only)."""
    return Model(FloatStepper(prior), tokenizer, prior.name, prior.fingerprint(),
                 prior.layout.kind, device=next(prior.parameters()).device.type)


def codec_model(codec: Codec) -> Model:
    """The portable path: a frozen codec's integer-exact coder."""
    return Model(codec.coder, codec.tokenizer, codec.info["prior"],
                 codec.info.get("prior_fingerprint"), codec.info.get("layout", "sequence"),
                 codec.fingerprint, codec.coder.max_block_length,
                 codec.coder.default_block_length, codec.coder.state_bytes_per_block(),
                 codec.coder.device.type)


def _ticks(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    """The coding loop's per-position callback: `progress(tokens, total)` as it goes."""
    return None if progress is None else (lambda n: progress(n, total))


# -- compress -------------------------------------------------------------------------------------
def compress(model: Model, examples: Sequence[Any], conds: Sequence[int | None] | None = None,
             settings: Settings | None = None, many: bool = True, run: str | None = None,
             stats: CodingStats | None = None, progress: Progress | None = None,
             version: int = FORMAT_VERSION) -> bytes:
    """The container holding `examples`, coded under `model`. Every example is checked to come
    back exactly (pipelines/compression/lossless.py) before any coding starts. Text that coding
    would enlarge is stored instead. `version` 1 writes the old format (float path only)."""
    settings = settings or Settings()
    tokenizer, stepper = model.tokenizer, model.stepper
    mode = compress_mode(tokenizer)
    if mode == "codes":
        logger.warning("tokenizer '%s' is lossy: the file holds its codes exactly, and "
                       "decompression gives the data they decode to, not the original.", tokenizer.name)
    if version == 1 and model.codec is not None:
        raise CompressionError("format version 1 has no portable files; use version 2.")
    conds = _check_conds(stepper.num_classes, conds, len(examples))
    _check_settings(settings)
    items = [to_tokens(tokenizer, x) for x in examples]
    for item in items:
        if item.ids.numel() and (item.ids.min() < 0 or item.ids.max() >= stepper.vocab_size):
            raise CompressionError(f"tokenizer '{tokenizer.name}' made ids outside the prior's "
                                   f"vocabulary [0, {stepper.vocab_size}).")
    block_length = _block_length(model, settings)
    batch_size = settings.batch_size or default_batch_size(model.state_bytes_per_block)
    blocks = plan_blocks([i.ids.numel() for i in items], block_length, list(conds))
    streams, total = [], sum(b.length for b in blocks)
    threads = settings.threads or (torch.get_num_threads() if model.codec is not None else 1)
    with fixed_threads(threads):
        for batch in batches(blocks, batch_size):
            L = max(b.length for b in batch)
            tokens = np.zeros((len(batch), L), dtype=np.int64)
            for row, b in enumerate(batch):
                tokens[row, : b.length] = items[b.item].ids[b.start : b.start + b.length].numpy()
            streams.append(encode_batch(stepper, batch, tokens, stats, _ticks(progress, total)))
    coder = {"precision": PRECISION, "block_length": block_length,
             "batch_size": batch_size, "threads": threads, "device": model.device}
    if version >= 2:
        coder.update(portable=model.codec is not None, codec=model.codec)
    header = {
        "tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint()},
        "prior": {"name": model.prior_name, "fingerprint": model.prior_fingerprint},
        "run": run,
        "mode": mode,
        "coder": coder,
        "items": _columns([{"kind": i.kind, "meta": i.meta, "length": i.length,
                            "tokens": i.ids.numel(), "cond": c, "escapes": len(i.escapes)}
                           for i, c in zip(items, conds, strict=True)]),
        "crc32": _combined([i.crc32 for i in items]),
        "batches": [int(s.size) for s in streams],
        "list": many,
    }
    payload = b"".join([*(i.escapes for i in items), *(s.astype("<u4").tobytes() for s in streams)])
    coded = _seal(version, header, payload)
    if version >= 2 and items and all(i.kind in STORABLE for i in items):
        stored = _stored(examples, items, many, len(coded))
        if stored is not None:
            logger.info("coding would not shrink this data (%d bytes against %d stored): stored",
                        len(coded), len(stored))
            return stored
    return coded


def _seal(version: int, header: dict[str, Any] | None, payload: bytes) -> bytes:
    head = b"" if header is None else \
        zlib.compress(json.dumps(header, separators=(",", ":"), sort_keys=True).encode(), 9)
    body = _PREFIX.pack(MAGIC, version, len(head)) + head + payload
    return body + _CRC.pack(zlib.crc32(body))


def _stored(examples: Sequence[Any], items: list[Tokens], many: bool, limit: int) -> bytes | None:
    """The stored form (stored.py) when it is smaller than `limit` bytes: one bytes item with no
    header at all, else a small header. None when it is not smaller or cannot keep an item."""
    if sum(i.length for i in items if i.kind == "text") >= limit:
        return None  # text is stored as it is: no smaller than its length
    raws = []
    for x, item in zip(examples, items, strict=True):
        raw = stored_bytes(x, item)
        if raw is None or sum(map(len, raws)) + len(raw) >= limit:
            return None
        raws.append(raw)
    if not many and items[0].kind == "text" and items[0].meta["type"] == "bytes":
        blob = _seal(FORMAT_VERSION, None, raws[0])
    else:
        header = {"stored": True, "list": many, "crc32": _combined([i.crc32 for i in items]),
                  "items": _columns(header_items(items, raws))}
        blob = _seal(FORMAT_VERSION, header, b"".join(raws))
    return blob if len(blob) < limit else None


def _columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Item fields as columns: a value all items share is stored once (`same`), the others as
    one list per field (`each`), so a file of 10,000 images does not repeat 10,000 headers."""
    fields = rows[0].keys() if rows else []
    same = {f: rows[0][f] for f in fields if all(r[f] == rows[0][f] for r in rows)}
    return {"n": len(rows), "same": same,
            "each": {f: [r[f] for r in rows] for f in fields if f not in same}}


def _combined(crcs: list[int]) -> int:
    """One CRC32 for the whole file's data: the CRC32 of every item's CRC32, in order."""
    return zlib.crc32(b"".join(_CRC.pack(c) for c in crcs))


def _check_conds(classes: int, conds: Sequence[int | None] | None, n: int) -> list[int | None]:
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
    if (s.batch_size is not None and s.batch_size < 1) or (s.threads is not None and s.threads < 1):
        raise CompressionError(f"batch size and threads must be at least 1, got {s.batch_size} "
                               f"and {s.threads}.")


def default_batch_size(per_block: int | None) -> int:
    """DEFAULT_BATCH_SIZE, or for a coder that reports its state per block (`per_block` bytes:
    a GPT's key/value cache) as many blocks as fit in STATE_BUDGET, between DEFAULT_BATCH_SIZE
    and MAX_DEFAULT_BATCH_SIZE."""
    if not per_block:
        return DEFAULT_BATCH_SIZE
    return max(DEFAULT_BATCH_SIZE, min(MAX_DEFAULT_BATCH_SIZE, STATE_BUDGET // per_block))


def _block_length(model: Model, s: Settings) -> int | None:
    """Tokens per block: whole images for grid priors, else the user's, the coder's default (a
    portable GPT's window) or DEFAULT_BLOCK_LENGTH; never more than a portable coder's
    `max_block_length`."""
    length = None if model.layout_kind == "grid" else \
        (s.block_length or model.default_block_length or DEFAULT_BLOCK_LENGTH)
    if model.max_block_length is not None:
        length = min(length or model.max_block_length, model.max_block_length)
    return length


# -- decompress -----------------------------------------------------------------------------------
@dataclass
class Container:
    header: dict[str, Any]
    escapes: list[bytes]
    streams: list[np.ndarray]
    stored: list[bytes] = field(default_factory=list)
    version: int = FORMAT_VERSION


def read_container(blob: bytes) -> Container:
    """Parse and check a compressed file: magic, CRC32, version, then every header field."""
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
    if version < 1 or n > len(blob) - _PREFIX.size - _CRC.size or (n == 0 and version < 2):
        raise CompressionError(f"the compressed file's prefix is invalid (version {version}, "
                               f"header of {n:,} bytes in a file of {len(blob):,}); it is damaged.")
    offset, end = _PREFIX.size + n, len(blob) - _CRC.size
    if n == 0:  # a stored file of bytes: no header
        raw = blob[offset:end]
        header = {"stored": True, "list": False, "crc32": _combined([zlib.crc32(raw)]),
                  "items": [{"kind": "text", "meta": {"type": "bytes"}, "length": len(raw),
                             "stored": len(raw), "tokens": 0, "cond": None, "escapes": 0}]}
        return Container(header, [b""], [], [raw], version)
    header = read_header(blob[_PREFIX.size : offset], end - offset, version)
    if header["stored"]:
        stored = []
        for item in header["items"]:
            stored.append(blob[offset : offset + item["stored"]])
            offset += item["stored"]
        return Container(header, [b""] * len(stored), [], stored, version)
    escapes = []
    for item in header["items"]:
        escapes.append(blob[offset : offset + item["escapes"]])
        offset += item["escapes"]
    streams = []
    for words in header["batches"]:
        streams.append(np.frombuffer(blob, dtype="<u4", count=words, offset=offset).astype(np.uint32))
        offset += 4 * words
    return Container(header, escapes, streams, [], version)


def decompress(blob: bytes, resolve: Callable[[dict[str, Any]], Model], codes: bool = False,
               progress: Progress | None = None) -> tuple[list[Any], bool]:
    """(the examples, whether the file holds a list) from a container made by `compress`.
    `resolve(header)` gives the model that coded it, or raises saying why it has none (stored
    files need none). `codes`: the token ids instead of the data."""
    c = read_container(blob)
    h = c.header
    if h["stored"]:
        return _unstore(c), bool(h["list"])
    model = resolve(h)
    coder = h["coder"]
    if coder["precision"] != PRECISION:
        raise CompressionError(f"the file's pmfs have {coder['precision']} bits of precision; this "
                               f"tokar codes with {PRECISION}.")
    if not coder["portable"] and coder["device"] != model.device:
        raise CompressionError(f"the file was coded on {coder['device']}, this prior runs on "
                               f"{model.device}: decode on the same kind of device, since float "
                               "kernels differ between them.")
    items = h["items"]
    classes = model.stepper.num_classes
    if any((i["cond"] is None) != (not classes) or (i["cond"] or 0) >= max(classes, 1)
           for i in items):
        raise CompressionError(f"the file's class labels do not fit this model ({classes} "
                               "classes); the file was damaged or edited.")
    check_tokens(items, sum(s.size for s in c.streams), len(c.streams), model.stepper.vocab_size,
                 PRECISION, coder["block_length"])
    blocks = plan_blocks([i["tokens"] for i in items], coder["block_length"],
                         [i["cond"] for i in items])
    planned = batches(blocks, coder["batch_size"])
    if len(planned) != len(c.streams):
        raise CompressionError("the compressed file's block table does not match its items; it is "
                               "damaged.")
    if model.max_block_length is not None and any(b.length > model.max_block_length for b in blocks):
        raise CompressionError(f"the file's blocks are longer than this codec codes "
                               f"({model.max_block_length} tokens); it was damaged or edited.")
    ids = [np.zeros(i["tokens"], dtype=np.int64) for i in items]
    # a portable file decodes with any number of threads: this process's own
    with fixed_threads(torch.get_num_threads() if coder["portable"] else coder["threads"]):
        for batch, words in zip(planned, c.streams, strict=True):
            tokens = decode_batch(model.stepper, batch, words,
                                  _ticks(progress, sum(i["tokens"] for i in items)))
            for row, b in enumerate(batch):
                ids[b.item][b.start : b.start + b.length] = tokens[row, : b.length]
    out, crcs = [], []
    for k, (item, escapes) in enumerate(zip(items, c.escapes, strict=True)):
        tensor = torch.from_numpy(ids[k])
        try:
            data = from_tokens(model.tokenizer, tensor, item["kind"], item["meta"], escapes)
        except CompressionError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError, OverflowError) as exc:
            raise CompressionError(f"the decoded tokens do not rebuild a {item['kind']} item "
                                   f"({type(exc).__name__}); the file was damaged or edited.") from exc
        crcs.append(checksum("codes", tensor) if item["kind"] == "codes" else checksum(item["kind"], data))
        out.append(tensor if codes else data)
    if _combined(crcs) != h["crc32"]:
        why = ("the file is damaged or edited" if coder["portable"] else
               "the model computed different probabilities than when compressing (another machine "
               "or device, a changed library; portable files do not depend on those) or the file "
               "is damaged")
        raise CompressionError(f"the decoded data does not match the file's CRC32: {why}. "
                               "Nothing was written.")
    return out, bool(h.get("list"))


def _unstore(c: Container) -> list[Any]:
    out = [unstore(item, raw) for item, raw in zip(c.header["items"], c.stored, strict=True)]
    crcs = [checksum(item["kind"], data) for item, data in zip(c.header["items"], out, strict=True)]
    if _combined(crcs) != c.header["crc32"]:
        raise CompressionError("the stored data does not match the file's CRC32; it is damaged.")
    return out


def check_float_model(h: dict[str, Any], prior: Prior, tokenizer: Any, run: str | None) -> None:
    """The float path decodes only with the very prior and tokenizer that compressed."""
    theirs = (h["tokenizer"]["fingerprint"], h["prior"]["fingerprint"])
    ours = (tokenizer.fingerprint(), prior.fingerprint())
    if theirs != ours:
        where = f" (run '{h['run']}')" if h.get("run") else ""
        here = f" (run '{run}')" if run else ""
        raise CompressionError(
            f"this file was compressed with another model{where}: tokenizer "
            f"{h['tokenizer']['name']} {theirs[0]}, prior {h['prior']['name']} {theirs[1]}; this "
            f"run{here} has tokenizer {tokenizer.name} {ours[0]}, prior {prior.name} {ours[1]}. "
            "Decompress it with the run that compressed it, loaded at the same precision "
            "(files compressed with --no-portable need the very same weights).")


__all__ = ["FORMAT_VERSION", "MAGIC", "STORED_OVERHEAD", "Container", "Model", "Settings",
           "Tokens", "check_float_model", "codec_model", "compress", "decompress", "float_model",
           "read_container"]
