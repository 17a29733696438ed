"""The GPT's integer-exact coder (priors/gpt_exact.py): close to the float prior, class
conditioning, the Bernoulli head, and blocks of at most block_size tokens."""

from __future__ import annotations

import pytest
import torch

from plugins.errors import CompressionError
from priors import GPT, GPTConfig
from tests.priors.test_exact import run, sharpened
from tokenizers_ar import Layout


def float_pmfs(model, ids, cond=None) -> torch.Tensor:
    with torch.no_grad():
        return model.distribution.quantized_pmf(model(ids, cond))


def assert_close_to_float(model, vocab: int, cond=None, T: int = 48):
    """The exact pmfs against the float model's `quantized_pmf`, on random ids: cross-entropy
    within 1% and log-masses within 0.02 nats on average. 12-bit weights per row and 12
    fractional bits of activations move logits by about 1e-3 relative, the tables (grid 2**-10)
    by ~5e-4 absolute: far below both bounds, which a wrong wiring (a missing bias, the wrong
    gate order, a layer skipped) exceeds many times over."""
    B = 1 if cond is None else cond.numel()
    ids = torch.randint(0, vocab, (max(B, 6) if cond is None else B, T),
                        generator=torch.Generator().manual_seed(3))
    exact = run(model.exact_coder(), ids, cond).double()
    ref = float_pmfs(model, ids, cond).double()
    ce = lambda p: float(-torch.log(p.gather(-1, ids[..., None]) / 2**16).mean())  # noqa: E731
    assert abs(ce(exact) - ce(ref)) < 0.01 * ce(ref)
    assert float((exact.log() - ref.log()).abs().mean()) < 0.02


@pytest.mark.parametrize("kw", [{}, {"bias": True}, {"n_classes": 3}])
def test_exact_gpt_is_close_to_the_float_gpt(kw):
    torch.manual_seed(0)
    model = sharpened(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=48, **kw), 13,
                          Layout.seq()), 3.0)
    assert_close_to_float(model, 13, torch.tensor([0, 1, 2, 2]) if kw.get("n_classes") else None)


def test_bernoulli_head():
    torch.manual_seed(0)
    model = sharpened(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32,
                                    head="bernoulli"), 2, Layout.seq()), 3.0)
    assert model.exact_coder().head == "bernoulli"
    assert_close_to_float(model, 2, T=32)


def test_a_state_codes_at_most_block_size_tokens():
    torch.manual_seed(0)
    coder = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8), 5,
                Layout.seq()).eval().exact_coder()
    assert coder.max_block_length == 8
    pmf, state = coder.init_state(2)  # predicts token 0
    for _ in range(7):  # tokens 0..6 in, pmfs of tokens 1..7
        pmf, state = coder.step(state, torch.zeros(2, dtype=torch.long))
    with pytest.raises(CompressionError, match="at most 8 tokens"):
        coder.step(state, torch.zeros(2, dtype=torch.long))
    with pytest.raises(CompressionError, match="class"):
        GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, n_classes=2), 5,
            Layout.seq()).eval().exact_coder().init_state(2)
