"""Stage 1 of tokar: tokenizers that turn data into discrete token ids and back."""

from tokenizers_ar.base import Layout, Tokenizer, TokenizerConfig
from tokenizers_ar.bpe import BPETokenizer
from tokenizers_ar.char import CharTokenizer
from tokenizers_ar.pixel import PixelTokenizer

__all__ = ["BPETokenizer", "CharTokenizer", "Layout", "PixelTokenizer", "Tokenizer", "TokenizerConfig"]
