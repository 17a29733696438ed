"""The Tokenizer contract: stage 1 turns data into discrete token ids and back.

A tokenizer is a small object with a pydantic `Config` (validated from the recipe), an optional
fitted state (a vocabulary, merges, a codebook) and a `layout` that tells priors what one encoded
example looks like. Saved form: a folder with `config.json` (name, format_version, settings, fitted
state) plus `tokenizer.safetensors` when the tokenizer has weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors.torch import load_file, save_file

from plugins.errors import CheckpointError
from plugins.shared import CONFIG_FILE, Layout, ValueSpace, read_config, write_config

__all__ = ["CONFIG_FILE", "Layout", "Tokenizer", "TokenizerConfig", "ValueSpace", "code_stats",
           "read_config", "write_config"]
WEIGHTS_FILE = "tokenizer.safetensors"


class TokenizerConfig(BaseModel):
    """Base for tokenizer settings: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Tokenizer(ABC):
    """Base class of every tokenizer. Subclasses set the class attributes and implement
    `vocab_size`, `layout`, `encode`, `decode`; trainable ones also `fit`, `state`, `load_state`.

    Discrete tokenizers (the usual kind) encode to LongTensor ids in [0, vocab_size). Continuous
    ones (`continuous = True`, e.g. `real`) encode to float tensors with `layout.dims` real
    numbers per position and have vocab_size 0; priors model them with a continuous head.
    """

    name: ClassVar[str]  # default registry name
    Config: ClassVar[type[TokenizerConfig]] = TokenizerConfig
    modality: ClassVar[str]  # "text" | "image" | "audio": what `encode` accepts
    unit: ClassVar[str]  # data unit that scores are reported in: "char", "subpixel", "sample"
    layout_kind: ClassVar[str]  # "seq" | "grid": known before fitting, so recipes validate early
    continuous: ClassVar[bool] = False  # real values per position, not ids: known before fitting
    lossless: ClassVar[bool] = True
    # encode(decode(ids)) == ids exactly. Learned codes (VQ) are only mostly stable: the decoded
    # image may encode to a neighbouring code; such tokenizers test their own agreement rate.
    stable_codes: ClassVar[bool] = True
    # Settings for a small instance that fits in a second (contract and smoke tests).
    smoke_settings: ClassVar[dict[str, Any]] = {}
    format_version: ClassVar[int] = 1
    # Settings added after runs existed, left out of the fingerprint while at their default: the
    # default encodes every input those runs accepted as before, so files compressed with an
    # older run still decompress (caches of other inputs: sources.TOKENIZED_FORMAT was bumped).
    fingerprint_omits_default: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TokenizerConfig | None = None, **settings: Any):
        if config is None:
            config = self.Config(**settings)
        elif settings:  # validated like any other settings, not pasted in
            config = self.Config(**{**config.model_dump(), **settings})
        self.config = config

    # -- what subclasses provide ---------------------------------------------------------------
    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids; every id is in [0, vocab_size). 0 for continuous tokenizers."""

    @property
    @abstractmethod
    def layout(self) -> Layout: ...

    @abstractmethod
    def encode(self, example: Any) -> torch.Tensor:
        """One example -> LongTensor shaped like `layout` ((T,) for seq, (H, W[, C]) for grid);
        continuous tokenizers: a float tensor with a last axis of `layout.dims` values."""

    @abstractmethod
    def decode(self, ids: torch.Tensor | Sequence[int]) -> Any:
        """Ids (flat raster order or layout-shaped) -> one example."""

    @property
    def is_fitted(self) -> bool:
        return True

    def fit(self, examples: Iterable[Any]) -> None:  # noqa: B027 - a no-op is the right default
        """Learn from training examples (vocabularies, codebooks). Fixed tokenizers do nothing."""

    def count_units(self, example: Any) -> int:
        """How many data units (`unit`) one example holds, for scores in data units. The
        default counts tokens: right when one token is one unit (char, pixel); a tokenizer whose
        tokens span several units (BPE, VQ codes, patches) must override it."""
        return int(self.encode(example).numel())

    def unit_counts(self, example: Any) -> dict[str, int]:
        """Every unit an example can be measured in ({"char": n, "byte": m} for text); scores
        report bits per each. The first is `unit`."""
        return {self.unit: self.count_units(example)}

    def state(self) -> dict[str, Any]:
        """JSON-serialisable fitted state, saved in config.json."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore what `state()` returned."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """Weights saved to tokenizer.safetensors (none for most tokenizers)."""
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: B027
        """Restore what `tensors()` returned."""

    def save_files(self, directory: Path) -> None:  # noqa: B027
        """Write files of a format of their own (BPE's tokenizer.json) next to config.json."""

    def load_files(self, directory: Path) -> None:  # noqa: B027
        """Read what `save_files` wrote."""

    @classmethod
    def known_vocab_size(cls, config: TokenizerConfig) -> int | None:
        """The vocabulary size settings alone fix (pixel levels, mu + 1, a codebook), before any
        fitting; None when fitting decides it (char, BPE). Recipes check heads against it early."""
        return None

    def discretization_nats(self) -> float:
        """Continuous tokenizers: nats to add per position so that the prior's density of the
        encoded (standardised) values becomes the probability of the data quantized at the
        tokenizer's step, in the data's own units: log(scale) - log(step), summed over the
        dims. Discrete tokenizers: 0 (ids are the data's own values)."""
        return 0.0

    # -- shared behaviour ------------------------------------------------------------------------
    @property
    def value_space(self) -> ValueSpace:
        """What one position holds: one of vocab_size ids, or layout.dims real numbers."""
        return self.layout.space(self.vocab_size)

    @property
    def eos_id(self) -> int | None:
        """Id placed between documents in a stream, if the tokenizer has one."""
        return None

    def encode_batch(self, examples: Iterable[Any]) -> list[torch.Tensor]:
        return [self.encode(x) for x in examples]

    def decode_batch(self, batch: Iterable[torch.Tensor]) -> list[Any]:
        return [self.decode(ids) for ids in batch]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_config(directory, {
            "name": self.name,
            "format_version": self.format_version,
            "config": self.config.model_dump(mode="json"),
            "state": self.state(),
        })
        tensors = self.tensors()
        if tensors:
            save_file({k: v.contiguous() for k, v in tensors.items()}, directory / WEIGHTS_FILE)
        self.save_files(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        payload = read_config(directory, "tokenizer", cls.format_version)
        try:
            tokenizer = cls(cls.Config(**payload.get("config", {})))
            tokenizer.load_state(payload.get("state", {}))
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{directory / CONFIG_FILE} does not describe a valid '{cls.name}' tokenizer "
                f"({exc}); it is corrupt or from an incompatible version."
            ) from exc
        tokenizer.load_files(directory)
        weights = directory / WEIGHTS_FILE
        if weights.exists():
            try:
                tokenizer.load_tensors(load_file(weights))
            except Exception as exc:  # safetensors raises several types for damaged files
                raise CheckpointError(
                    f"{weights} is truncated or corrupt ({exc}); re-run training to recreate it."
                ) from exc
        return tokenizer

    def fingerprint(self) -> str:
        """Changes whenever the tokenizer would encode anything differently (cache key)."""
        h = hashlib.sha256()
        h.update(type(self).__qualname__.encode())
        config = self.config.model_dump(mode="json")
        for key in self.fingerprint_omits_default:
            if getattr(self.config, key) == type(self.config).model_fields[key].default:
                config.pop(key, None)
        h.update(json.dumps(config, sort_keys=True).encode())
        h.update(json.dumps(self.state(), sort_keys=True).encode())
        for key, tensor in sorted(self.tensors().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        fitted = f"vocab_size={self.vocab_size}, layout={self.layout}" if self.is_fitted else "unfitted"
        return f"{type(self).__name__}({fitted})"


def code_stats(counts: torch.Tensor) -> dict[str, float]:
    """How evenly a tokenizer uses its vocabulary, from per-id counts: usage (share of ids used at
    least once) and perplexity exp(H(p)) of the id distribution (K when all K ids are used
    equally, 1 when one id takes everything). Used for VQ codebook health."""
    total = counts.sum()
    if total == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    p = counts[counts > 0].double() / total
    return {"usage": (counts > 0).float().mean().item(),
            "perplexity": math.exp(-(p * p.log()).sum().item())}
