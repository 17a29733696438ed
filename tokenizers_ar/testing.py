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

`example_data(modality)` gives small real-looking examples for "text", "image", "audio" and
"series" tokenizers (audio: decaying tones with noise, in each accepted input form and at two
rates; series: random walks of 2-D points).
"""

from __future__ import annotations

from typing import Any

import numpy as np
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
    if modality == "series":  # random walks of 2-D points, of different lengths
        rng = np.random.default_rng(seed)
        return [np.cumsum(rng.standard_normal((20 + 7 * i, 2)), axis=0) * 3 + 5 for i in range(n)]
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
        layout = tokenizer.layout
        assert isinstance(tokenizer.vocab_size, int)
        if tokenizer.continuous:
            assert layout.continuous and tokenizer.vocab_size == 0, \
                f"a continuous tokenizer has vocab_size 0 and a layout with dims, got " \
                f"{tokenizer.vocab_size} and {layout}"
        else:
            assert not layout.continuous and tokenizer.vocab_size >= 2, \
                f"vocab_size {tokenizer.vocab_size}, layout {layout}"
        assert layout.kind == tokenizer.layout_kind, f"layout {layout} vs layout_kind {tokenizer.layout_kind}"
        assert tokenizer.unit and tokenizer.modality

    def test_encode_shape_dtype_range(self, tokenizer: Tokenizer, examples: list[Any]) -> None:
        layout = tokenizer.layout
        value_shape = (layout.dims,) if layout.continuous else ()
        for x in examples:
            ids = tokenizer.encode(x)
            if layout.kind == "grid":
                assert tuple(ids.shape) == (*layout.shape, *value_shape), \
                    f"encoded shape {tuple(ids.shape)}, layout {layout}"
            else:
                assert ids.dim() == 1 + len(value_shape) and tuple(ids.shape[1:]) == value_shape, \
                    f"encoded shape {tuple(ids.shape)}, layout {layout}"
            if layout.continuous:
                assert ids.dtype == torch.float32 and torch.isfinite(ids).all()
            else:
                assert ids.dtype == torch.long, f"ids of dtype {ids.dtype}, expected torch.long"
                assert ids.numel() == 0 or (ids.min() >= 0 and ids.max() < tokenizer.vocab_size), \
                    f"ids range over [{ids.min()}, {ids.max()}], vocab_size {tokenizer.vocab_size}"

    def test_ids_round_trip(self, tokenizer: Tokenizer, examples: list[Any]) -> None:
        """encode(decode(ids)) == ids: decoding loses nothing the ids say (real values: up to
        float32 rounding). Learned codes (`stable_codes = False`) are only mostly stable: their
        round trip must give codes of the same shape and range (their own tests bound how many
        change)."""
        for x in examples:
            ids = tokenizer.encode(x)
            again = tokenizer.encode(tokenizer.decode(ids))
            if not tokenizer.stable_codes:
                assert again.shape == ids.shape and again.dtype == ids.dtype, \
                    f"encode(decode(ids)) has shape {tuple(again.shape)}, ids {tuple(ids.shape)}"
                assert again.numel() == 0 or (again.min() >= 0 and again.max() < tokenizer.vocab_size)
            elif tokenizer.continuous:
                torch.testing.assert_close(again.reshape(-1), ids.reshape(-1), atol=1e-4, rtol=1e-4)
            else:
                assert torch.equal(again.reshape(-1), ids.reshape(-1)), "encode(decode(ids)) != ids"

    def test_lossless_round_trip(self, tokenizer: Tokenizer, examples: list[Any]) -> None:
        """decode(encode(x)) == x for lossless tokenizers (compared as arrays for images); a lossy
        one must at least decode to the kind of data it encodes (its own tests bound the loss)."""
        for x in examples:
            y = tokenizer.decode(tokenizer.encode(x))
            if not tokenizer.lossless:
                kind = {"text": str, "image": Image.Image}.get(tokenizer.modality, np.ndarray)
                assert isinstance(y, kind), f"decode gave {type(y).__name__}, expected {kind.__name__}"
            elif isinstance(x, str):
                assert y == x, f"{x!r} came back as {y!r}"
            else:
                assert np.array_equal(np.asarray(y), np.asarray(x)), "the round trip changed the data"

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
        """Scores are per data unit, not per token: a tokenizer whose tokens span several units
        (BPE, VQ codes) must count the units itself (count_units / unit_counts)."""
        for x in examples:
            n = tokenizer.count_units(x)
            assert n > 0, f"count_units gave {n}"
            counts = tokenizer.unit_counts(x)
            assert counts.get(tokenizer.unit) == n, \
                f"unit_counts {counts} must hold count_units={n} under the unit {tokenizer.unit!r}"
            if tokenizer.modality == "text" and tokenizer.unit == "char":
                assert n == len(x), f"{len(x)} characters counted as {n} (tokens, not chars?)"
            if tokenizer.modality == "image" and tokenizer.unit == "subpixel":
                h, w = np.asarray(x).shape[:2]
                assert n in (h * w, 3 * h * w), f"a {h}x{w} image counted as {n} subpixels"
