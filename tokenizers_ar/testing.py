"""The tokenizer contract suite, shipped so plugin authors run the same checks tokar runs.

Subclass it in your tests and provide two fixtures::

    import pytest
    from tokenizers_ar.testing import TokenizerContract

    class TestMyTokenizer(TokenizerContract):
        @pytest.fixture
        def tokenizer(self):
            tok = MyTokenizer()
            tok.fit(my_examples())
            return tok

        @pytest.fixture
        def examples(self):
            return my_examples()[:4]

`example_data(modality)` gives small real-looking examples for "text", "image" and "audio"
tokenizers (audio: decaying tones with noise, in each accepted input form and at two rates).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizers_ar.base import Tokenizer

TEXT = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "All:\nSpeak, speak.\n\tResolved. resolved!",
    "  whitespace  runs\r\nand CRLF\n",
]


def example_data(modality: str, n: int = 4, seed: int = 0) -> list[Any]:
    """Small examples for a modality: text strings, 8x8 grayscale PIL images, or short audio
    clips as {"array", "sampling_rate"} dicts and (array, rate) tuples at 16 and 22.05 kHz."""
    if modality == "text":
        return [TEXT[i % len(TEXT)] for i in range(n)]
    if modality == "image":
        rng = np.random.default_rng(seed)
        return [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L")
                for _ in range(n)]
    if modality == "audio":
        rng = np.random.default_rng(seed)
        out: list[Any] = []
        for i in range(n):
            rate = (16000, 22050)[i % 2]
            t = np.arange(int(rate * 0.05 * (1 + i % 3))) / rate
            wave = 0.5 * np.exp(-8 * t) * np.sin(2 * np.pi * rng.uniform(100, 1000) * t)
            wave = (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
            out.append({"array": wave, "sampling_rate": rate} if i % 2 == 0 else (wave, rate))
        return out
    raise ValueError(f"no example data for modality {modality!r}")


class TokenizerContract:
    """Checks every tokenizer must pass. Fixtures: `tokenizer` (fitted), `examples`."""

    def test_vocab_and_layout(self, tokenizer: Tokenizer) -> None:
        assert tokenizer.is_fitted
        assert isinstance(tokenizer.vocab_size, int) and tokenizer.vocab_size >= 2
        assert tokenizer.layout.kind == tokenizer.layout_kind
        assert tokenizer.unit and tokenizer.modality

    def test_encode_shape_dtype_range(self, tokenizer: Tokenizer, examples: list[Any]) -> None:
        for x in examples:
            ids = tokenizer.encode(x)
            assert ids.dtype == torch.long
            if tokenizer.layout.kind == "grid":
                assert tuple(ids.shape) == tokenizer.layout.shape
            else:
                assert ids.dim() == 1
            assert ids.numel() == 0 or (ids.min() >= 0 and ids.max() < tokenizer.vocab_size)

    def test_ids_round_trip(self, tokenizer: Tokenizer, examples: list[Any]) -> None:
        """encode(decode(ids)) == ids: decoding loses nothing the ids say."""
        if not tokenizer.stable_codes:
            pytest.skip("learned codes are only mostly stable: tested by the tokenizer's own tests")
        for x in examples:
            ids = tokenizer.encode(x)
            again = tokenizer.encode(tokenizer.decode(ids))
            assert torch.equal(again.reshape(-1), ids.reshape(-1))

    def test_lossless_round_trip(self, tokenizer: Tokenizer, examples: list[Any]) -> None:
        """decode(encode(x)) == x for lossless tokenizers (compared as arrays for images)."""
        if not tokenizer.lossless:
            pytest.skip("lossy tokenizer: distortion is tested by its own tests")
        for x in examples:
            y = tokenizer.decode(tokenizer.encode(x))
            if isinstance(x, str):
                assert y == x
            else:
                assert np.array_equal(np.asarray(y), np.asarray(x))

    def test_batched_forms_match(self, tokenizer: Tokenizer, examples: list[Any]) -> None:
        batch = tokenizer.encode_batch(examples)
        for x, ids in zip(examples, batch, strict=True):
            assert torch.equal(ids, tokenizer.encode(x))
        decoded = tokenizer.decode_batch(batch)
        assert len(decoded) == len(examples)

    def test_save_load_identical(self, tokenizer: Tokenizer, examples: list[Any], tmp_path) -> None:
        tokenizer.save(tmp_path / "tok")
        loaded = type(tokenizer).from_pretrained(tmp_path / "tok")
        assert loaded.vocab_size == tokenizer.vocab_size
        assert loaded.layout == tokenizer.layout
        assert loaded.fingerprint() == tokenizer.fingerprint()
        for x in examples:
            ids = tokenizer.encode(x)
            assert torch.equal(loaded.encode(x), ids)
            assert torch.equal(loaded.encode(loaded.decode(ids)), tokenizer.encode(tokenizer.decode(ids)))

    def test_deterministic(self, tokenizer: Tokenizer, examples: list[Any]) -> None:
        for x in examples:
            assert torch.equal(tokenizer.encode(x), tokenizer.encode(x))

    def test_count_units(self, tokenizer: Tokenizer, examples: list[Any]) -> None:
        for x in examples:
            assert tokenizer.count_units(x) > 0
