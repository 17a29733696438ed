"""Decoding strategies on top of init_state/step: processors, greedy, stop tokens, prompts, beam
search (against brute force) and speculative decoding (greedy identity, exact distribution)."""

from __future__ import annotations

import itertools

import pytest
import torch

from priors import GPT, DecodeConfig, GPTConfig, generate
from priors.processors import min_p, repetition_penalty, temperature, top_k, top_p
from tokenizers_ar import Layout


def gpt(seed=0, n_layer=2, vocab=7, block_size=16, n_embd=16) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=n_layer, n_head=2, n_embd=n_embd, block_size=block_size),
                vocab, Layout.seq()).eval()
    with torch.no_grad():  # sharper, more varied distributions than the tiny init gives
        model.wte.weight.mul_(40)
    return model


LOGITS = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])
EMPTY = torch.empty(1, 0, dtype=torch.long)


def kept(logits):
    return (logits[0] > float("-inf")).nonzero().flatten().tolist()


def test_processors():
    assert kept(top_k(2)(LOGITS, EMPTY)) == [0, 4]
    probs = torch.softmax(LOGITS, -1)[0]  # 4: .63, 0: .23, 1: .09 ...
    assert kept(top_p(0.6)(LOGITS, EMPTY)) == [4]
    assert kept(top_p(0.7)(LOGITS, EMPTY)) == [0, 4]
    assert kept(top_p(1.0)(LOGITS, EMPTY)) == [0, 1, 2, 3, 4]
    assert kept(min_p(0.3)(LOGITS, EMPTY)) == [0, 4]  # 0.23/0.63 >= 0.3, 0.09/0.63 < 0.3
    assert probs.argmax() == 4
    torch.testing.assert_close(temperature(2.0)(LOGITS, EMPTY), LOGITS / 2)
    pen = repetition_penalty(2.0)(LOGITS, torch.tensor([[0, 3, 0]]))
    torch.testing.assert_close(pen, torch.tensor([[1.0, 1.0, 0.5, -2.0, 3.0]]))
    with pytest.raises(ValueError, match="top_p"):
        top_p(0)


def test_greedy_is_the_argmax_chain_and_sampling_is_seeded():
    model = gpt()
    out = generate(model, 2, DecodeConfig(max_new_tokens=10, greedy=True)).tokens
    ids = torch.empty(2, 0, dtype=torch.long)
    for _ in range(10):  # the slow way: a full forward pass per token
        nxt = model(torch.cat([ids, ids[:, :1]], 1))[:, -1] if ids.size(1) else \
            model.init_state(2).params
        ids = torch.cat([ids, nxt.argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)
    a = generate(model, 3, DecodeConfig(max_new_tokens=12, top_p=0.9),
                 generator=torch.Generator().manual_seed(3)).tokens
    b = generate(model, 3, DecodeConfig(max_new_tokens=12, top_p=0.9),
                 generator=torch.Generator().manual_seed(3)).tokens
    assert torch.equal(a, b)


def test_stop_tokens_end_each_row():
    model = gpt()
    free = generate(model, 4, DecodeConfig(max_new_tokens=12),
                    generator=torch.Generator().manual_seed(1)).tokens
    stop = int(free[0, 2])
    out = generate(model, 4, DecodeConfig(max_new_tokens=12, stop_tokens=[stop]),
                   generator=torch.Generator().manual_seed(1))
    for row, n in zip(out.tokens, out.lengths, strict=True):
        hits = (row == stop).nonzero().flatten()
        if len(hits):
            assert n == hits[0] + 1 and (row[n - 1 :] == stop).all()
        else:
            assert n == 12
    assert out.lengths[0] <= 3


def test_prompt_is_fed_in_one_pass_even_past_the_context():
    model = gpt(block_size=8)
    prompt = torch.randint(0, 7, (2, 20), generator=torch.Generator().manual_seed(0))
    out = generate(model, 2, DecodeConfig(max_new_tokens=5, greedy=True), prompt=prompt).tokens
    # same as stepping through the prompt token by token
    logits, state = model.init_state(2)
    for t in range(20):
        step, state = model.step(state, prompt[:, t : t + 1])
    expected = []
    logits = step[:, -1]
    for _ in range(5):
        tok = logits.argmax(-1, keepdim=True)
        expected.append(tok)
        step, state = model.step(state, tok)
        logits = step[:, -1]
    assert torch.equal(out, torch.cat(expected, 1))


def test_beam_search_finds_the_most_likely_sequence():
    model = gpt(vocab=3)
    N = 3
    seqs = torch.tensor(list(itertools.product(range(3), repeat=N)))
    with torch.no_grad():
        best = seqs[model.log_prob(seqs).argmax()]
    out = generate(model, 1, DecodeConfig(max_new_tokens=N, num_beams=9, length_penalty=0.0))
    assert torch.equal(out.tokens[0], best)
    greedy = generate(model, 1, DecodeConfig(max_new_tokens=N, greedy=True)).tokens[0]
    with torch.no_grad():
        assert model.log_prob(out.tokens).item() >= model.log_prob(greedy[None]).item() - 1e-6


def test_beam_search_stop_tokens_and_batches():
    model = gpt()
    out = generate(model, 2, DecodeConfig(max_new_tokens=8, num_beams=3, stop_tokens=[0]))
    assert out.tokens.shape[0] == 2 and (out.lengths <= 8).all()
    for row, n in zip(out.tokens, out.lengths, strict=True):
        assert 0 not in row[: n - 1].tolist()


def test_speculative_greedy_equals_target_greedy():
    target, draft = gpt(seed=0, n_layer=3), gpt(seed=1, n_layer=1)
    config = DecodeConfig(max_new_tokens=40, greedy=True, num_draft_tokens=4)
    plain = generate(target, 1, config).tokens
    spec = generate(target, 1, config, draft=draft)
    assert torch.equal(spec.tokens, plain)
    assert spec.proposed > 0 and 0 <= spec.acceptance_rate <= 1
    prompt = torch.tensor([[1, 2, 3]])  # also after a prompt, and past the context (block 16)
    assert torch.equal(generate(target, 1, config, draft=draft, prompt=prompt).tokens,
                       generate(target, 1, config, prompt=prompt).tokens)


def test_speculative_with_itself_as_draft_accepts_everything():
    target = gpt()
    out = generate(target, 1, DecodeConfig(max_new_tokens=20), draft=gpt(),
                   generator=torch.Generator().manual_seed(0))
    assert out.acceptance_rate == 1.0


def test_speculative_sampling_is_distributed_as_the_target():
    """Chi-square test of 3-token samples against the target's exact probabilities."""
    V, N, draws = 3, 3, 3000
    target, draft = gpt(seed=0, vocab=V), gpt(seed=5, vocab=V, n_layer=1)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=N)))
    with torch.no_grad():
        exact = target.log_prob(seqs).exp()
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(len(seqs))
    proposed = accepted = 0
    config = DecodeConfig(max_new_tokens=N, num_draft_tokens=2)
    for _ in range(draws):
        out = generate(target, 1, config, draft=draft, generator=g)
        proposed, accepted = proposed + out.proposed, accepted + out.accepted
        counts[(out.tokens[0] * torch.tensor([V * V, V, 1])).sum()] += 1
    expected = exact * draws
    chi2 = (((counts - expected) ** 2) / expected).sum().item()
    # 26 degrees of freedom: P(chi2 > 54.05) = 0.001 for a correct sampler
    assert chi2 < 54.05, (chi2, counts.tolist(), expected.tolist())
    assert 0.05 < accepted / proposed < 0.999  # a different draft: some, not all, accepted


def test_rewind_and_reorder_state():
    model = gpt(block_size=8)
    ids = torch.randint(0, 7, (3, 6), generator=torch.Generator().manual_seed(0))
    _, fresh = model.init_state(3)
    want, _ = model.step(fresh, ids[:, :4])
    _, state = model.init_state(3)
    _, state = model.step(state, ids)
    state = model.rewind(state, 3)  # back to ids[:, :3]
    got, _ = model.step(state, ids[:, 3:4])
    torch.testing.assert_close(got[:, -1], want[:, -1], atol=1e-5, rtol=1e-5)
    # past a slide of the window (block 8): rewinding rebuilds from the history
    long = torch.randint(0, 7, (1, 12), generator=torch.Generator().manual_seed(1))
    _, state = model.init_state(1)
    for t in range(12):
        _, state = model.step(state, long[:, t : t + 1])
    state = model.rewind(state, 6)
    got, _ = model.step(state, long[:, 6:7])
    _, ref = model.init_state(1)
    want, _ = model.step(ref, long[:, :7])
    torch.testing.assert_close(got[:, -1], want[:, -1], atol=1e-5, rtol=1e-5)
    # reorder: rows follow the index
    _, state = model.init_state(3)
    _, state = model.step(state, ids[:, :2])
    state = model.reorder_state(state, torch.tensor([2, 2, 0]))
    got, _ = model.step(state, ids[[2, 2, 0], 2:3])
    _, ref = model.init_state(3)
    want, _ = model.step(ref, ids[[2, 2, 0], :3])
    torch.testing.assert_close(got[:, -1], want[:, -1], atol=1e-5, rtol=1e-5)




def test_beam_search_does_not_stop_before_a_better_hypothesis_can_finish():
    # Stop token 0. From the start: P(0) = .45 (finishes at once, normalised -0.80), P(1) = .55;
    # after 1: P(3) = .95; after 3: P(0) = .95. [1, 3, 0] scores log(.55*.95*.95)/3 = -0.23.
    from priors.base import Prior, StepOutput

    table = torch.full((5, 4), 1e-6)
    table[4] = torch.tensor([0.45, 0.55, 1e-6, 1e-6])  # row 4: the start
    table[1, 3], table[3, 0] = 0.95, 0.95
    table[0, 0] = table[2, 0] = 0.95
    logt = table.log()

    class Chain(Prior):
        name = "chain"

        def forward(self, ids, cond=None):
            prev = torch.cat([torch.full_like(ids[:, :1], 4), ids[:, :-1]], 1)
            return logt[prev]

        def init_state(self, b, cond=None):
            return StepOutput(logt[4].expand(b, -1), None)

        def step(self, state, ids):
            return StepOutput(logt[ids], state)

        def reorder_state(self, state, index):
            return state

    prior = Chain(Chain.Config(), 4, Layout.seq())
    out = generate(prior, 1, DecodeConfig(max_new_tokens=5, num_beams=2, stop_tokens=[0]))
    assert out.tokens[0, : out.lengths[0]].tolist() == [1, 3, 0]
    assert out.tokens.shape == (1, 5)  # padded to max_new_tokens like every strategy


def test_speculative_draft_length_is_clamped_to_what_the_priors_can_rewind():
    target, draft = gpt(block_size=4), gpt(seed=1, n_layer=1, block_size=4)
    cfg = DecodeConfig(max_new_tokens=30, greedy=True, num_draft_tokens=6)
    assert torch.equal(generate(target, 1, cfg, draft=draft).tokens, generate(target, 1, cfg).tokens)


def test_gpt_rewinds_stay_exact_after_many_rewinds():
    model = gpt(block_size=5)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (1, 60), generator=g)
    _, state = model.init_state(1)
    fed = 0
    for _ in range(25):  # feed 3, rewind 2, repeatedly: the window must always match a fresh run
        _, state = model.step(state, ids[:, fed : fed + 3])
        state = model.rewind(state, 2)
        fed += 1
        got, state = model.step(state, ids[:, fed : fed + 1])
        fed += 1
        _, ref = model.init_state(1)
        want = torch.cat([model.step(ref, ids[:, t : t + 1]).params for t in range(fed)], 1)
        torch.testing.assert_close(got[:, -1], want[:, -1], atol=1e-5, rtol=1e-5)


def test_gpt_rewinds_across_slides_swap_the_replaced_window_back():
    """Random drafts and rejections, as speculative decoding makes them: every step's params
    match a fresh pass, and once a rewind has rebuilt a window, later rewinds into the window a
    slide replaced restore it instead of recomputing it."""
    model = gpt(block_size=8)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (1, 200), generator=g)
    refills = []
    refill = model._refill
    model._refill = lambda state, keep: refills.append(keep) or refill(state, keep)
    _, state = model.init_state(1)
    fed, swaps = 0, 0
    while fed < 150:
        k = int(torch.randint(1, 6, (), generator=g))
        got, state = model.step(state, ids[:, fed : fed + k])
        _, ref = model.init_state(1)
        want = torch.cat([model.step(ref, ids[:, t : t + 1]).params for t in range(fed + k)], 1)
        torch.testing.assert_close(got, want[:, fed:], atol=1e-5, rtol=1e-5)
        r = int(torch.randint(0, k + 1, (), generator=g))
        before, spare_start = len(refills), state.spare_start
        state = model.rewind(state, r)
        swaps += spare_start is not None and state.spare_start is None and len(refills) == before
        fed += k - r
    assert state.keep_spare and swaps > 5


def test_draw_follows_the_probabilities_and_never_draws_a_zero():
    """priors.heads.base.draw inverts each row's cdf: frequencies match the probabilities (a
    chi-square test), values of probability 0 never come out, even at the ends of a row, and
    the same generator seed gives the same draws."""
    from priors.heads.base import draw

    probs = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    n = 20000
    g = torch.Generator().manual_seed(0)
    out = draw(probs[None].expand(n, 2, 6), g)  # (n, 2)
    assert out.shape == (n, 2)
    assert (out[:, 1] == 5).all()
    counts = torch.bincount(out[:, 0], minlength=6).double()
    assert counts[[0, 2, 5]].sum() == 0
    expected = probs[0].double() * n
    keep = expected > 0
    chi2 = (((counts[keep] - expected[keep]) ** 2) / expected[keep]).sum().item()
    assert chi2 < 13.82  # 2 degrees of freedom: P(chi2 > 13.82) = 0.001
    again = draw(probs[None].expand(n, 2, 6), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
