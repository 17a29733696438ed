"""Character tokenizer: one id per distinct character, as in char-rnn and nanoGPT's
shakespeare_char.

The vocabulary is fitted from the training data (sorted, so it does not depend on data order).
A character outside it is an error that names the character and its position, unless `unk` is on,
in which case it maps to a reserved `<unk>` id (decoded as U+FFFD). Deliberately no normalisation:
the round trip is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from plugins.errors import TokenizerError
from tokenizers_ar.base import Layout, Tokenizer, TokenizerConfig

UNK_CHAR = "\ufffd"


class CharConfig(TokenizerConfig):
    unk: bool = False  # map unseen characters to <unk> instead of raising
    vocab: str | None = None  # a fixed vocabulary instead of fitting one


class CharTokenizer(Tokenizer):
    name = "char"
    Config = CharConfig
    modality = "text"
    unit = "char"
    layout_kind = "seq"

    def __init__(self, config: CharConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.chars: list[str] = []
        if self.config.vocab is not None:
            self._set_vocab(self.config.vocab)

    def _set_vocab(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        # Code points below 2**16 go through a lookup table: encoding 1 MB is then one numpy op.
        self._table = np.full(1 << 16, -1, dtype=np.int64)
        for c, i in self.stoi.items():
            if ord(c) < (1 << 16):
                self._table[ord(c)] = i

    @property
    def is_fitted(self) -> bool:
        return bool(self.chars)

    @property
    def unk_id(self) -> int | None:
        return len(self.chars) if self.config.unk else None

    @property
    def vocab_size(self) -> int:
        self._require_fitted()
        return len(self.chars) + (1 if self.config.unk else 0)

    @property
    def layout(self) -> Layout:
        return Layout.seq()

    def fit(self, examples: Iterable[str]) -> None:
        if self.config.vocab is not None:
            return
        seen: set[str] = set()
        for text in examples:
            seen.update(_as_text(text))
        if not seen:
            raise TokenizerError("char tokenizer: the training text is empty; nothing to fit.")
        self._set_vocab(seen)

    def encode(self, example: str) -> torch.Tensor:
        self._require_fitted()
        text = _as_text(example)
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(len(codes), -1, dtype=np.int64)
        small = codes < (1 << 16)
        ids[small] = self._table[codes[small]]
        for j in np.flatnonzero(~small):  # astral characters (emoji...): rare, look them up
            ids[j] = self.stoi.get(text[j], -1)
        missing = np.flatnonzero(ids < 0)
        if len(missing):
            if self.unk_id is None:
                pos = int(missing[0])
                raise TokenizerError(
                    f"char tokenizer: character {text[pos]!r} (U+{ord(text[pos]):04X}) at position "
                    f"{pos} is not in the vocabulary of {len(self.chars)} characters fitted from the "
                    f"training data ({len(missing)} unseen in this text). Set tokenizer.unk=true to "
                    "map unseen characters to <unk>, or fit on data that contains them."
                )
            ids[missing] = self.unk_id
        return torch.from_numpy(ids)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        self._require_fitted()
        out = []
        for i in torch.as_tensor(ids).reshape(-1).tolist():
            if 0 <= i < len(self.chars):
                out.append(self.chars[i])
            elif i == self.unk_id:
                out.append(UNK_CHAR)
            else:
                raise TokenizerError(
                    f"char tokenizer: id {i} is outside the vocabulary [0, {self.vocab_size})."
                )
        return "".join(out)

    def count_units(self, example: str) -> int:
        return len(example)

    def unit_counts(self, example: str) -> dict[str, int]:
        return {"char": len(example), "byte": len(example.encode("utf-8"))}

    def state(self) -> dict[str, Any]:
        return {"chars": "".join(self.chars)}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("chars"):
            self._set_vocab(state["chars"])

    def _require_fitted(self) -> None:
        if not self.chars:
            raise TokenizerError(
                "char tokenizer has no vocabulary yet: call fit(texts) first, or set "
                "tokenizer.vocab in the recipe."
            )


def _as_text(example: Any) -> str:
    if not isinstance(example, str):
        raise TokenizerError(
            f"char tokenizer encodes str, got {type(example).__name__}; check that the recipe's "
            "data column holds text."
        )
    return example
