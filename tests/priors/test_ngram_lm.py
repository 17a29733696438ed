"""The n-gram prior (priors/ngram_lm.py): a token sees only the n - 1 before it, every context
length adds its own row, long contexts hash into a bounded table, and as a speculative draft it
keeps the target's output exact while its rounds stop short of the GPT's window slides."""

from __future__ import annotations

import pytest
import torch

from plugins.errors import CheckpointError
from priors import DecodeConfig, generate
from priors.ngram_lm import NGramLM, NGramLMConfig
from tests.priors.test_sampling import gpt
from tokenizers_ar import Layout


def ngram(n=3, vocab=7, **kw) -> NGramLM:
    torch.manual_seed(0)
    m = NGramLM(NGramLMConfig(n=n, init_std=1.0, **kw), vocab, Layout.seq()).eval()
    return m


@pytest.mark.parametrize("n", [2, 3, 5])
def test_a_token_sees_only_the_n_minus_1_before_it(n):
    m = ngram(n)
    x = torch.randint(0, 7, (4, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = m(x)
        for t in range(19):
            y = x.clone()
            y[:, t] = (y[:, t] + 1) % 7
            changed = (m(y) - base).abs().amax(dim=(0, 2)) > 1e-6
            assert changed.nonzero().flatten().tolist() == list(range(t + 1, min(t + n, 20)))


def test_params_are_the_sum_of_one_row_per_context_length():
    m = ngram(3, vocab=4)
    x = torch.tensor([[2, 0, 3, 1]])
    base = 5  # vocabulary + the padding symbol
    with torch.no_grad():
        params = m(x)[0, 3]  # after (0, 3): rows "3" and "0 3"
        one = m.table[3]
        two = m.table[base + 3 + 0 * base]  # the second table starts after the first's 5 rows
        torch.testing.assert_close(params, m.bias + one + two)


def test_long_contexts_hash_into_a_bounded_table_and_stay_exact_to_decode():
    m = ngram(6, vocab=50, buckets=97)
    assert m.table.size(0) == 51 + 4 * 97  # exact bigram rows, then 97 rows per longer context
    x = torch.randint(0, 50, (3, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = m(x)
        params, state = m.init_state(3)
        steps = [params[:, None]] + [m.step(state, x[:, t : t + 1]).params for t in range(29)]
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_class_conditioning_adds_a_bias_per_class_in_every_path():
    m = ngram(3, n_classes=2)
    with torch.no_grad():
        m.class_bias.normal_()
        x = torch.randint(0, 7, (2, 10), generator=torch.Generator().manual_seed(3))
        cond = torch.tensor([0, 1])
        full = m(x, cond)
        shift = (m.class_bias[cond] - m.class_bias[cond.flip(0)])[:, None].expand_as(full)
        torch.testing.assert_close(full - m(x, cond.flip(0)), shift)
        params, state = m.init_state(2, cond)
        steps = [params[:, None], m.step(state, x[:, :9]).params]
    torch.testing.assert_close(torch.cat(steps, 1), full)
    with pytest.raises(ValueError, match="class-conditional"):
        m(x)


def test_rewind_is_bounded_by_what_the_state_remembers(tmp_path):
    m = ngram(3, max_rewind=2)
    _, state = m.init_state(1)
    m.step(state, torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match="cannot rewind 3"):
        m.rewind(state, 3)
    m.rewind(state, 2)
    assert state.fed == 1
    m.save(tmp_path / "prior")
    (tmp_path / "prior" / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(CheckpointError, match="corrupt"):
        NGramLM.from_pretrained(tmp_path / "prior")


def test_as_a_draft_greedy_is_the_targets_own_and_no_slide_is_paid_twice():
    """A GPT target past its block_size slides its window; a round's drafts stop at the next
    slide (Prior.step_horizon), so speculative decoding rebuilds the window no more often than
    plain decoding does."""
    target, draft = gpt(block_size=8), ngram(3)
    counts = {}
    refill = target._refill

    def counting(state, keep):
        counts[mode] = counts.get(mode, 0) + 1
        return refill(state, keep)

    target._refill = counting
    config = DecodeConfig(max_new_tokens=60, greedy=True, num_draft_tokens=5)
    mode = "plain"
    plain = generate(target, 1, config).tokens
    mode = "speculative"
    spec = generate(target, 1, config, draft=draft)
    assert torch.equal(spec.tokens, plain) and spec.proposed > 0
    assert counts["speculative"] == counts["plain"] > 5
