"""Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant, Radford et al. 2019) on
Hugging Face `tokenizers`.

`fit` learns merges from the training text up to `vocab_size` ids. Text is first mapped to its
UTF-8 bytes, so any Unicode string (emoji, CJK, characters never seen in training, `\\r\\n`, runs
of spaces and tabs) encodes and decodes back exactly: no normalisation, no unknown token.
Special tokens EOS (between documents) and PAD sit at the first ids; there is no BOS because
every prior starts from its own start token. Scores are reported per character (and per UTF-8
byte), never per token, so BPE and character models compare on one scale.

Saved form: config.json plus `tokenizer.json` in Hugging Face's format (loadable by
`tokenizers.Tokenizer.from_file` outside tokar).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from plugins.errors import TokenizerError
from tokenizers_ar.base import Layout, Tokenizer, TokenizerConfig

EOS, PAD = "<|endoftext|>", "<|pad|>"
TOKENIZER_FILE = "tokenizer.json"


class BPEConfig(TokenizerConfig):
    vocab_size: int = Field(512, ge=258, description="ids in all: 256 bytes, 2 specials, merges")
    min_frequency: int = Field(2, ge=1, description="pairs seen fewer times are not merged")


class BPETokenizer(Tokenizer):
    name = "bpe"
    Config = BPEConfig
    modality = "text"
    unit = "char"
    layout_kind = "seq"

    def __init__(self, config: BPEConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self._tok = None  # a tokenizers.Tokenizer once fitted or loaded

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, examples: Iterable[str]) -> None:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.config.vocab_size,
            min_frequency=self.config.min_frequency,
            special_tokens=[EOS, PAD],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: nothing unknown
            show_progress=False,
        )
        texts = (_as_text(x) for x in examples)
        tok.train_from_iterator(texts, trainer=trainer)
        self._tok = tok

    @property
    def is_fitted(self) -> bool:
        return self._tok is not None

    # -- the contract ----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._require().get_vocab_size()

    @property
    def layout(self) -> Layout:
        return Layout.seq()

    @property
    def eos_id(self) -> int:
        return self._require().token_to_id(EOS)

    @property
    def pad_id(self) -> int:
        return self._require().token_to_id(PAD)

    def encode(self, example: str) -> torch.Tensor:
        return torch.tensor(self._require().encode(_as_text(example)).ids, dtype=torch.long)

    def encode_batch(self, examples: Iterable[str]) -> list[torch.Tensor]:
        encoded = self._require().encode_batch([_as_text(x) for x in examples])  # parallel, in Rust
        return [torch.tensor(e.ids, dtype=torch.long) for e in encoded]

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            raise TokenizerError(f"bpe tokenizer: ids must lie in [0, {self.vocab_size}).")
        # keep specials visible: an EOS inside a sample is information
        return self._require().decode(ids, skip_special_tokens=False)

    def count_units(self, example: str) -> int:
        return len(example)

    def unit_counts(self, example: str) -> dict[str, int]:
        return {"char": len(example), "byte": len(example.encode("utf-8"))}

    # -- persistence -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        # the merges live in tokenizer.json; their hash keeps the fingerprint honest
        return {"tokenizer_sha256": hashlib.sha256(self._require().to_str().encode()).hexdigest()}

    def save_files(self, directory: Path) -> None:
        self._require().save(str(directory / TOKENIZER_FILE))

    def load_files(self, directory: Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        path = directory / TOKENIZER_FILE
        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as exc:  # missing or damaged file
            from plugins.errors import CheckpointError

            raise CheckpointError(f"{path} is missing or corrupt ({exc}).") from exc

    def _require(self):
        if self._tok is None:
            raise TokenizerError("bpe tokenizer is not fitted: call fit(texts) first.")
        return self._tok


def _as_text(example: Any) -> str:
    if not isinstance(example, str):
        raise TokenizerError(f"bpe tokenizer encodes str, got {type(example).__name__}.")
    return example
