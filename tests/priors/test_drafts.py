"""Draft sources of speculative decoding (priors/drafts.py): prompt lookup and self-speculation
keep the target's greedy output and its sampling distribution exactly; what cannot work is a
clear DecodingError."""

from __future__ import annotations

import itertools

import pytest
import torch

from plugins.errors import DecodingError
from priors import GPT, DecodeConfig, GPTConfig, generate
from priors.drafts import NGramDraft, resolve_draft
from priors.lstm import LSTM, LSTMConfig
from tests.priors.test_sampling import gpt
from tokenizers_ar import Layout


def test_ngram_draft_proposes_the_continuation_of_the_latest_match():
    d = NGramDraft(max_ngram=2)
    d.start(None, None)
    ctx = [1, 2, 3, 4, 1, 2, 5, 6, 2]
    # suffix (6, 2) never occurred before; (2,) did, latest at index 5: continuation 5, 6, 2
    assert d.propose(ctx, 3, (), False, None) == ([5, 6, 2], None)
    assert d.propose(ctx + [5], 2, (), False, None) == ([6, 2], None)  # (2, 5) matched now
    assert d.propose([7], 3, (), False, None) == ([], None)  # nothing to copy from
    with pytest.raises(DecodingError, match="min_ngram"):
        NGramDraft(max_ngram=1, min_ngram=2)


def test_ngram_draft_stops_proposing_while_its_copies_are_rejected():
    d = NGramDraft(max_ngram=1)
    d.start(None, None)
    ctx = [1, 2, 1, 2, 1]
    drafts, _ = d.propose(ctx, 4, (), False, None)
    assert drafts == [2, 1]  # the continuation of the latest earlier 1
    d.accept(0, 7)  # rejected at its first token: stop proposing ...
    lengths = []
    for _ in range(6):
        drafts, _ = d.propose(ctx, 4, (), False, None)
        lengths.append(len(drafts))
        d.accept(len(drafts), 2)  # ... and a probe that is accepted grows the proposals again
    assert lengths == [0, 0, 0, 0, 1, 2]  # a probe after four rounds; 1 + 2 after it is accepted
    fixed = NGramDraft(max_ngram=1, adaptive=False)
    fixed.start(None, None)
    fixed.accept(0, 7)
    assert fixed.propose(ctx, 4, (), False, None)[0] == [2, 1]


def test_a_round_without_drafts_leaves_the_adaptive_length_alone():
    """The engine asks for 0 drafts where the target's window is about to slide."""
    d = NGramDraft(max_ngram=1)
    d.start(None, None)
    ctx = [1, 2, 1, 2, 1]
    assert d.propose(ctx, 0, (), False, None) == ([], None)
    d.accept(0, 2)
    assert d.propose(ctx, 4, (), False, None)[0] == [2, 1]


@pytest.mark.parametrize("draft", ["ngram", "ngram:1", "layers:1", "layers:2"])
def test_greedy_output_is_the_targets_own(draft):
    target = gpt(seed=0, n_layer=3)
    config = DecodeConfig(max_new_tokens=40, greedy=True, num_draft_tokens=4)
    prompt = torch.tensor([[1, 2, 3, 1, 2]])
    plain = generate(target, 1, config, prompt=prompt).tokens
    spec = generate(target, 1, config, draft=draft, prompt=prompt)
    assert torch.equal(spec.tokens, plain)
    assert spec.proposed > 0 and 0 <= spec.acceptance_rate <= 1


@pytest.mark.parametrize("draft", ["ngram", "layers:1"])
def test_several_sequences_each_with_its_own_acceptance(draft):
    """n > 1: every row is its own prompt's greedy output, with stop tokens cutting rows apart."""
    target = gpt(seed=0, n_layer=3)
    prompt = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 4, 4], [0, 1, 0, 1, 0]])
    config = DecodeConfig(max_new_tokens=30, greedy=True, num_draft_tokens=4)
    plain = generate(target, 3, config, prompt=prompt)
    spec = generate(target, 3, config, draft=draft, prompt=prompt)
    assert torch.equal(spec.tokens, plain.tokens) and torch.equal(spec.lengths, plain.lengths)
    stop = int(plain.tokens[1, 5])  # a token row 1 reaches early
    config = DecodeConfig(max_new_tokens=30, greedy=True, num_draft_tokens=4, stop_tokens=[stop])
    plain, spec = generate(target, 3, config, prompt=prompt), \
        generate(target, 3, config, draft=draft, prompt=prompt)
    assert [s.tolist() for s in spec.sequences()] == [s.tolist() for s in plain.sequences()]
    assert int(spec.lengths[1]) <= 6


def test_ngram_drafts_are_accepted_when_the_target_repeats_itself():
    """A greedy tiny model falls into a loop; prompt lookup then predicts it."""
    target = gpt(seed=3, n_layer=2, vocab=3)
    out = generate(target, 1, DecodeConfig(max_new_tokens=60, greedy=True), draft="ngram")
    assert out.acceptance_rate > 0.5


def deep(V: int) -> GPT:
    """A GPT whose second layer changes its distributions a lot (so that its first layer alone
    is a draft that is often, not always, right) and whose distributions are not peaked."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16), V, Layout.seq()).eval()
    with torch.no_grad():
        model.wte.weight.mul_(10)
        model.h[1].mlp.c_proj.weight.mul_(100)
    return model


@pytest.mark.parametrize("draft", ["ngram:2", "fixed ngram:2", "layers:1"])
def test_sampling_is_distributed_as_the_target(draft):
    """Chi-square test of 3-token continuations of a prompt against the target's exact
    conditional probabilities; point-mass (n-gram) and early-exit proposals alike."""
    V, N, draws = 3, 3, 2000
    target = deep(V) if draft.startswith("layers") else gpt(seed=0, vocab=V, n_layer=2)
    prompt = torch.tensor([[0, 1, 2, 0, 1]])
    seqs = torch.tensor(list(itertools.product(range(V), repeat=N)))
    with torch.no_grad():
        full = target.log_prob(torch.cat([prompt.expand(len(seqs), -1), seqs], 1))
        exact = (full - target.log_prob(prompt)).exp()
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(len(seqs))
    proposed = accepted = 0
    config = DecodeConfig(max_new_tokens=N, num_draft_tokens=2)
    drafter = NGramDraft(2, adaptive=False) if draft == "fixed ngram:2" else draft
    for _ in range(draws):
        out = generate(target, 1, config, draft=drafter, prompt=prompt, generator=g)
        proposed, accepted = proposed + out.proposed, accepted + out.accepted
        counts[(out.tokens[0] * torch.tensor([V * V, V, 1])).sum()] += 1
    expected = exact * draws
    chi2 = (((counts - expected) ** 2) / expected).sum().item()
    # 26 degrees of freedom: P(chi2 > 54.05) = 0.001 for a correct sampler
    assert chi2 < 54.05, (chi2, counts.tolist(), expected.tolist())
    # drafts are proposed and judged (an adaptive n-gram draft stops proposing after this tiny
    # target rejects its first copy, so only the fixed-length one must see acceptances)
    assert proposed > 0 and accepted / proposed < 0.999
    if draft != "ngram:2":
        assert accepted / proposed > 0.05


def test_early_exit_shares_the_targets_weights():
    target = gpt(seed=0, n_layer=3)
    draft = target.early_exit(2)
    assert len(draft.h) == 2 and draft.h[0] is target.h[0] and draft.lm_head is target.lm_head
    assert draft.num_parameters() < target.num_parameters()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert draft(ids).shape == target(ids).shape


def test_what_cannot_draft_is_a_clear_error():
    target = gpt(seed=0, n_layer=2)
    with pytest.raises(DecodingError, match="1 to 1 of this GPT's 2 layers"):
        resolve_draft(target, "layers:2")
    with pytest.raises(DecodingError, match="layer count"):
        resolve_draft(target, "layers")
    with pytest.raises(DecodingError, match="unknown draft 'bigram'"):
        resolve_draft(target, "bigram")
    with pytest.raises(DecodingError, match="draft vocabulary"):
        resolve_draft(target, gpt(vocab=5))
    lstm = LSTM(LSTMConfig(n_layer=2, n_embd=8, n_hidden=8), 7, Layout.seq()).eval()
    with pytest.raises(DecodingError, match="cannot draft with its own first layers"):
        generate(lstm, 1, DecodeConfig(max_new_tokens=3), draft="layers:1")
