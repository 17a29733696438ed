"""Frozen codecs: what decodes a portable compressed file, kept apart from the run's weights.

A portable file (pipelines/compression/container.py, `coder.portable`) is coded with a prior's
`ExactCoder` (priors/integer.py). The first portable compress of a run freezes that coder, with
the tokenizer and the order of positions, into

    RUN/codecs/<fingerprint>/
        codec.json          what it is: prior and tokenizer names and fingerprints, order, run
        coder/              the ExactCoder (config.json + coder.safetensors: integers only)
        tokenizer/          the tokenizer, saved as the run saves it

written atomically (a temporary folder renamed into place). The file's header names the
fingerprint, and decompression finds the codec by it: training the run further changes its
weights but not the frozen codec, so old files still decode. `tokar export-codec RUN DIR` copies
the codecs out; a codec folder (or a folder of them) decodes files with no run at all.

The fingerprint is a SHA-256 (16 hex digits) of the coder's config and integer tensors and of the
ordered tokenizer's fingerprint: two codecs with one fingerprint decode the same files.

Not here: the coder's arithmetic (priors/integer.py); the container and coding loop
(container.py, coding.py); deleting codecs (a user's files are never deleted: old ones stay).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.data.order import OrderConfig, Ordering
from pipelines.runs.rundir import load_saved
from plugins.errors import CheckpointError, CompressionError, TokarError
from plugins.manager import get_registries
from priors.base import Prior
from priors.integer import ExactCoder, load_coder, save_coder

logger = logging.getLogger(__name__)

CODECS_DIR = "codecs"
CODEC_FILE = "codec.json"
CODEC_FORMAT = 1


@dataclass
class Codec:
    """A portable coding step and what names it: `coder` gives the pmfs, `tokenizer` (ordered as
    the prior reads) turns ids back into data, `info` is codec.json."""

    fingerprint: str
    coder: ExactCoder
    tokenizer: Any
    info: dict[str, Any]


def fingerprint(coder: ExactCoder, tokenizer_fingerprint: str) -> str:
    h = hashlib.sha256(json.dumps(coder.config(), sort_keys=True).encode())
    for name, tensor in sorted(coder.tensors().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(tokenizer_fingerprint.encode())
    return h.hexdigest()[:16]


def build_codec(prior: Prior, tokenizer: Any, order: OrderConfig, run: str | None) -> Codec:
    """The codec of a prior's current weights (its ExactCoder built from them: about a second)."""
    coder = prior.exact_coder()
    tok_fp = tokenizer.fingerprint()
    info = {"format_version": CODEC_FORMAT, "prior": prior.name,
            "prior_fingerprint": prior.fingerprint(), "layout": prior.layout.kind,
            "tokenizer": _base(tokenizer).name, "tokenizer_fingerprint": tok_fp,
            "order": order.model_dump(mode="json"), "run": run}
    fp = fingerprint(coder, tok_fp)
    return Codec(fp, coder, tokenizer, {**info, "fingerprint": fp})


def _base(tokenizer: Any) -> Any:
    return getattr(tokenizer, "tokenizer", tokenizer)  # an OrderedTokenizer wraps the saved one


def freeze(codec: Codec, run_dir: Path) -> Path:
    """RUN/codecs/<fingerprint>/, written once (temporary folder + rename); an existing one is
    kept as it is."""
    final = run_dir / CODECS_DIR / codec.fingerprint
    if (final / CODEC_FILE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{codec.fingerprint}.", dir=final.parent))
    try:
        save_coder(codec.coder, tmp / "coder")
        _base(codec.tokenizer).save(tmp / "tokenizer")
        (tmp / CODEC_FILE).write_text(json.dumps(codec.info, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process froze the same codec first: theirs is identical
            if not (final / CODEC_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)  # our own temporary folder, never a user's file
    logger.info("froze codec %s in %s", codec.fingerprint, final)
    return final


def load_codec(directory: Path) -> Codec:
    """A codec folder made by `freeze` (or copied by `tokar export-codec`)."""
    try:
        info = json.loads((directory / CODEC_FILE).read_text(encoding="utf-8"))
        if info.get("format_version") != CODEC_FORMAT:
            raise CheckpointError(f"the codec in {directory} has format version "
                                  f"{info.get('format_version')}; this tokar reads {CODEC_FORMAT}.")
        registries = get_registries()
        prior_cls = registries.priors.get(info["prior"])
        tokenizer_cls = registries.tokenizers.get(info["tokenizer"])
        coder_cls = prior_cls.exact_coder_class
        if coder_cls is None:
            raise CheckpointError(f"prior '{info['prior']}' has no exact coder in this tokar.")
        coder = load_coder(directory / "coder", coder_cls)
        tokenizer = load_saved(tokenizer_cls, directory / "tokenizer", "tokenizer")
        ordering = Ordering(OrderConfig(**info["order"]), tokenizer.layout)
    except TokarError:
        raise
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"the codec in {directory} is incomplete or corrupt "
                              f"({type(exc).__name__}: {exc}).") from exc
    ordered = ordering.wrap(tokenizer)
    fp = fingerprint(coder, ordered.fingerprint())
    if fp != info.get("fingerprint"):
        raise CheckpointError(f"the codec in {directory} does not match its fingerprint "
                              f"({info.get('fingerprint')}; its contents give {fp}): it was "
                              "edited or damaged.")
    return Codec(fp, coder, ordered, info)


def find_codec(where: Path, fp: str) -> Path | None:
    """The folder of codec `fp` under `where`: a run (RUN/codecs/fp), a codec folder itself, or a
    folder of codecs (what `tokar export-codec` writes); None when it has none."""
    for candidate in (where / CODECS_DIR / fp, where / fp, where):
        if (candidate / CODEC_FILE).is_file() and _named(candidate) == fp:
            return candidate
    return None


def _named(directory: Path) -> str | None:
    try:
        return json.loads((directory / CODEC_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def is_codec_dir(where: Path) -> bool:
    """A codec folder, or a folder holding codec folders (not a run)."""
    return (where / CODEC_FILE).is_file() or any((d / CODEC_FILE).is_file()
                                                 for d in _subdirs(where))


def _subdirs(where: Path) -> list[Path]:
    try:
        return sorted(d for d in where.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return []


def export_codecs(run_dir: Path, out: Path) -> list[Path]:
    """Copy every frozen codec of a run into `out`/<fingerprint>/ (each copied to a temporary
    folder, then renamed). Codecs already in `out` are left as they are."""
    codecs = [d for d in _subdirs(run_dir / CODECS_DIR) if (d / CODEC_FILE).is_file()]
    if not codecs:
        raise CompressionError(f"{run_dir} has no frozen codecs yet: `tokar compress` (portable, "
                               "the default) freezes one on first use.")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for codec in codecs:
        target = out / codec.name
        if not (target / CODEC_FILE).is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".{codec.name}.", dir=out))
            try:
                shutil.copytree(codec, tmp, dirs_exist_ok=True)
                os.rename(tmp, target)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
        written.append(target)
    return written
