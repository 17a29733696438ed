"""A word tokenizer: one id per distinct whitespace-separated word of the training text, id 0
for any word it has not seen. Lossy (the spacing between words is not kept, unseen words decode
as <unk>), and scores are reported per character of the original text: `count_units` says how
many characters an example holds, since one token here spans several."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from pydantic import Field

from tokenizers_ar import Layout, Tokenizer, TokenizerConfig

UNK = "<unk>"


class WordsConfig(TokenizerConfig):
    min_count: int = Field(1, ge=1, description="words seen fewer times become <unk>")


class WordTokenizer(Tokenizer):
    name = "words"
    Config = WordsConfig
    modality = "text"  # encode() takes str
    unit = "char"  # scores are bits per character...
    layout_kind = "seq"  # ...of a sequence of any length
    lossless = False

    def __init__(self, config: WordsConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.words: list[str] = []

    @property
    def is_fitted(self) -> bool:
        return bool(self.words)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    @property
    def layout(self) -> Layout:
        return Layout.seq()

    def fit(self, examples: Iterable[str]) -> None:
        counts = Counter(word for text in examples for word in text.split())
        kept = sorted(w for w, n in counts.items() if n >= self.config.min_count and w != UNK)
        self.words = [UNK, *kept]
        self._ids = {w: i for i, w in enumerate(self.words)}

    def encode(self, example: str) -> torch.Tensor:
        return torch.tensor([self._ids.get(w, 0) for w in example.split()], dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        return " ".join(self.words[int(i)] for i in torch.as_tensor(ids).reshape(-1))

    def count_units(self, example: str) -> int:
        return len(example)  # characters, not tokens: bits per char compare with char models

    def state(self) -> dict[str, Any]:
        return {"words": self.words}

    def load_state(self, state: dict[str, Any]) -> None:
        self.words = list(state.get("words", []))
        self._ids = {w: i for i, w in enumerate(self.words)}
