"""The GPT's integer-exact coder (priors/gpt_exact.py): close to the float prior, class
conditioning, the Bernoulli head, the sliding window past block_size, and format-1 coders
(priors/gpt_exact_v1.py) loading as they were saved."""

from __future__ import annotations

import pytest
import torch

from plugins.errors import CompressionError
from priors import GPT, GPTConfig
from priors.gpt_exact import GPTExactCoder
from priors.gpt_exact_v1 import GPTExactCoderV1
from priors.integer import load_coder, save_coder
from tests.priors.exact_kernels import assert_close_to_float, run_coder, sharpened
from tokenizers_ar import Layout


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


def test_past_block_size_the_window_slides_as_the_float_gpt_does():
    """Three windows' worth of tokens: close to the float GPT stepping the same tokens (which
    slides its own window), and each slide is exactly a fresh window fed the start vector and
    the newest (block_size - 1) // 2 tokens."""
    torch.manual_seed(0)
    prior = sharpened(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8), 5,
                          Layout.seq()), 3.0)
    coder = prior.exact_coder()
    assert coder.max_block_length is None and coder.default_block_length == 8 and coder.keep == 3
    ids = torch.randint(0, 5, (4, 24), generator=torch.Generator().manual_seed(1))
    exact = run_coder(coder, ids).double()
    with torch.inference_mode():
        params, state = prior.init_state(4)
        steps = [params[:, None]]  # (B, 1, P), as step gives them
        for t in range(23):
            params, state = prior.step(state, ids[:, t : t + 1])
            steps.append(params)
        ref = prior.distribution.quantized_pmf(torch.cat(steps, 1)).double()
    ce = lambda p: float(-torch.log(p.gather(-1, ids[..., None]) / 2**16).mean())  # noqa: E731
    assert abs(ce(exact) - ce(ref)) < 0.01 * ce(ref)
    # token 7 fills position 8: the window slides, keeping tokens 4..6, then takes token 7
    fresh = run_coder(coder, ids[:, 4:9])  # start, 4, 5, 6, 7 -> the pmf after token 7 is [:, 4]
    assert torch.equal(exact[:, 8].long(), fresh[:, 4])


def test_a_conditional_coder_needs_the_class():
    coder = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, n_classes=2), 5,
                Layout.seq()).eval().exact_coder()
    with pytest.raises(CompressionError, match="class"):
        coder.init_state(2)


def test_format_1_coders_load_as_they_were_saved(tmp_path):
    """A coder saved by the first format (float64 products) loads as that format, pmf for pmf:
    files compressed with it keep decoding. New coders are format 2."""
    torch.manual_seed(0)
    prior = sharpened(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16), 7,
                          Layout.seq()), 3.0)
    old = GPTExactCoderV1.from_prior(prior)
    save_coder(old, tmp_path)
    loaded = load_coder(tmp_path, GPTExactCoder)
    assert type(loaded) is GPTExactCoderV1 and prior.exact_coder().format_version == 2
    ids = torch.randint(0, 7, (3, 16), generator=torch.Generator().manual_seed(1))
    assert torch.equal(run_coder(loaded, ids), run_coder(old, ids))
