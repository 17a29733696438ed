"""GPT specifics beyond the shared contract: the sliding window past block_size, class
conditioning, and the parallel prompt pass."""

from __future__ import annotations

import pytest
import torch

from plugins.errors import LayoutError
from priors import GPT, GPTConfig, generate
from priors.decoding import DecodeConfig
from tokenizers_ar import Layout


def small(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, **kw), 5, Layout.seq()).eval()


def test_window_slides_past_block_size_and_matches_a_fresh_pass():
    gpt = small()
    ids = torch.randint(0, 5, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, state = gpt.init_state(2)
        for t in range(20):
            logits, state = gpt.step(state, ids[:, t : t + 1])
            # the model's view after feeding ids[:, :t+1]: start + at most the newest tokens
            assert state.pos <= gpt.config.block_size
            context = ids[:, max(0, t + 1 - (state.pos - 1)) : t + 1]
            fresh = gpt(torch.cat([context, ids[:, :1]], dim=1))[:, -1]  # next-token logits
            torch.testing.assert_close(logits[:, -1], fresh, atol=1e-5, rtol=1e-5)


def test_generation_longer_than_the_context():
    out = generate(small(), 3, DecodeConfig(max_new_tokens=50),
                   generator=torch.Generator().manual_seed(0)).tokens
    assert out.shape == (3, 50)


@pytest.mark.parametrize("chunk", [1, 3, 7, 8, 25])
def test_logits_do_not_depend_on_how_tokens_are_fed(chunk):
    """Slides happen at fixed token counts, so any chunking gives token-by-token logits."""
    gpt = small()
    ids = torch.randint(0, 5, (2, 25), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, state = gpt.init_state(2)
        one_by_one = torch.cat([gpt.step(state, ids[:, t : t + 1]).params for t in range(25)], 1)
        _, state = gpt.init_state(2)
        chunked = torch.cat([gpt.step(state, ids[:, s : s + chunk]).params
                             for s in range(0, 25, chunk)], 1)
    torch.testing.assert_close(chunked, one_by_one, atol=1e-5, rtol=1e-5)
    with pytest.raises(LayoutError, match="longer than block_size 8"):
        gpt(torch.zeros(1, 9, dtype=torch.long))


def test_class_conditioning_changes_the_distribution():
    gpt = small(n_classes=3)
    ids = torch.randint(0, 5, (1, 6))
    with torch.no_grad():
        a = gpt(ids, torch.tensor([0]))
        b = gpt(ids, torch.tensor([2]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="class-conditional"):
        gpt(ids)


def test_layout_check_names_the_fix():
    problems = GPT.check_layout(Layout.grid(28, 28), GPTConfig(block_size=256))
    assert problems == ["the tokenizer makes 784 tokens per example (grid 28x28) but "
                        "prior.block_size is 256; set prior.block_size=784 or more."]
    assert GPT.check_layout(Layout.grid(8, 8), GPTConfig(block_size=64)) == []
