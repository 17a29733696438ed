"""FVSBN, NADE, MADE and the plain RNN beyond the shared contract: each against the formula of its
paper, MADE's masks and ensembles, and every decoding strategy on each of them."""

from __future__ import annotations

import itertools

import pytest
import torch

from plugins.errors import DecodingError
from plugins.shared import Layout
from priors import DecodeConfig, generate
from priors.fvsbn import FVSBN, FVSBNConfig
from priors.made import MADE, MADEConfig
from priors.nade import NADE, NADEConfig
from priors.rnn import RNN, RNNConfig
from priors.testing import PriorContract


def bits(n: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, (n, T), generator=torch.Generator().manual_seed(seed))


def test_fvsbn_is_one_logistic_regression_per_position():
    torch.manual_seed(0)
    m = FVSBN(FVSBNConfig(head="bernoulli"), 2, Layout.grid(3, 3)).eval()
    x = bits(4, 9)
    with torch.no_grad():
        logits = m(x)[..., 0]
        e = m.embed(x)[..., 0]  # (B, T): the 1-wide embedding, affine in the bit
        w = m.weight[:, 0, :, 0]  # (t, s)
        for t in range(9):
            want = m.bias[t, 0] + (w[t, :t] * e[:, :t]).sum(-1)
            torch.testing.assert_close(logits[:, t], want)
        # and it is affine in the bit itself: alpha_t + sum_s beta_ts x_s
        slope = m.embed.weight[1, 0] - m.embed.weight[0, 0]
        x2 = x.clone()
        x2[:, 0] = 1 - x2[:, 0]
        delta = m(x2)[..., 0] - logits
        torch.testing.assert_close(delta[:, 1:], (w[1:, 0] * slope)[None] * (x2[:, :1] - x[:, :1]))


def test_nade_equals_its_quadratic_definition():
    torch.manual_seed(0)
    m = NADE(NADEConfig(head="bernoulli", n_hidden=5, n_embd=2), 2, Layout.grid(2, 4)).eval()
    x = bits(3, 8, seed=1)
    with torch.no_grad():
        e = m.embed(x)  # (B, T, E)
        got = m(x)
        for t in range(8):  # h_t = sigmoid(c + sum_{s<t} W_s e_s), params_t = b_t + V_t h_t
            a = m.c + torch.einsum("bse,seh->bh", e[:, :t], m.W[:t])
            torch.testing.assert_close(got[:, t], torch.sigmoid(a) @ m.V[t] + m.b[t])


@pytest.mark.parametrize("E,P", [(1, 1), (3, 2)])
def test_nade_hand_written_gradient_is_the_formula_s(E, P):
    """The blocked forward and hand-written backward of NADE's layer against autograd of the
    definition, over more positions than one block (and a last block cut short)."""
    from priors.nade import BLOCK, _NADELayer

    T, B, H = 2 * BLOCK + 3, 3, 4
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(*shape, generator=g, dtype=torch.double, requires_grad=True)
            for shape in [(T, B, E), (T, E, H), (H,), (T, H, P), (T, P)]]

    def definition(e, W, c, V, b):
        u = torch.einsum("tbe,teh->tbh", e, W)
        a = c + u.cumsum(0) - u
        return torch.einsum("tbh,thp->tbp", torch.sigmoid(a), V) + b[:, None]

    torch.testing.assert_close(_NADELayer.apply(*args), definition(*args))
    assert torch.autograd.gradcheck(_NADELayer.apply, args)


def test_rnn_is_the_tanh_recurrence():
    torch.manual_seed(0)
    m = RNN(RNNConfig(n_layer=1, n_embd=4, n_hidden=6), 5, Layout.seq()).eval()
    ids = torch.randint(0, 5, (2, 7), generator=torch.Generator().manual_seed(2))
    r = m.rnn
    with torch.no_grad():
        inputs = torch.cat([m.start(2, None), m.wte(ids[:, :-1])], 1)
        h, outs = torch.zeros(2, 6), []
        for t in range(7):
            pre = inputs[:, t] @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T + r.bias_hh_l0
            h = torch.tanh(pre)
            outs.append(m.head(h))
        torch.testing.assert_close(m(ids), torch.stack(outs, 1))
        assert not hasattr(m, "lstm")  # a plain RNN: no LSTM weights behind it


def made(T=6, **kw) -> MADE:
    torch.manual_seed(0)
    kw = {"n_hidden": 24, "n_layer": 2, "n_masks": 4, "head": "bernoulli"} | kw
    return MADE(MADEConfig(**kw), 2, Layout.grid(1, T)).eval()


@pytest.mark.parametrize("k", range(4))
def test_every_made_mask_is_autoregressive_in_its_own_ordering(k):
    m = made()
    order = m.ranks[k].argsort()  # positions in the order this mask predicts them
    if k == 0:
        assert torch.equal(order, torch.arange(6)), "mask 0 must keep raster order"
    e = torch.randn(16, 6, 1, requires_grad=True)  # inputs after the embedding
    B = e.size(0)
    weights = m._masked_weights(k)
    for t in range(6):
        h = e.reshape(B, -1)
        for layer, w in zip(m.hidden, weights, strict=False):
            h = torch.relu(torch.nn.functional.linear(h, w, layer.bias))
        out = torch.nn.functional.linear(h, weights[2], m.out.bias) + \
            torch.nn.functional.linear(e.reshape(B, -1), weights[-1])
        (grad,) = torch.autograd.grad(out[:, t].sum(), e)
        seen = grad.abs().sum((0, 2)) > 0
        earlier = m.ranks[k] < m.ranks[k][t]
        assert torch.equal(seen, earlier), (k, t, seen.tolist(), earlier.tolist())


def test_made_masks_differ_and_each_is_a_normalised_distribution():
    m = made(T=4)
    assert len({tuple(r.tolist()) for r in m.ranks}) > 1, "order-agnostic masks share one ordering"
    every = torch.tensor(list(itertools.product([0, 1], repeat=4)))
    per_mask = m.mask_log_probs(every)  # (4 masks, 16)
    torch.testing.assert_close(per_mask.exp().sum(1), torch.ones(4), atol=1e-5, rtol=0)
    ens = m.ensemble_log_prob(every)
    torch.testing.assert_close(ens.exp().sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(ens, torch.logsumexp(per_mask, 0) - torch.log(torch.tensor(4.0)))
    torch.testing.assert_close(per_mask[0], m.log_prob(every))  # mask 0 is what scoring uses
    assert torch.allclose(m.ensemble_log_prob(every, n=1), m.log_prob(every), atol=1e-6)


def test_made_trains_over_its_masks_and_evaluates_on_mask_0():
    m = made().train()
    x = bits(8, 6)
    torch.manual_seed(3)
    seen = {tuple(m(x).flatten().tolist()) for _ in range(30)}
    assert len(seen) > 1, "training mode should draw different masks"
    m.eval()
    torch.testing.assert_close(m(x), m._run(x, 0))
    fixed = made(n_masks=4, order_agnostic=False, connectivity_agnostic=False)
    assert (fixed.ranks == torch.arange(6)).all() and (fixed.hidden_degrees == fixed.hidden_degrees[0]).all()


def test_made_with_a_gaussian_mixture_head_models_real_vectors():
    torch.manual_seed(0)
    m = MADE(MADEConfig(n_hidden=16, head={"name": "gaussian_mixture", "n_mixtures": 3}), 0,
             Layout.grid(1, 5, dims=1)).eval()
    x = torch.randn(4, 5, 1)
    assert m(x).shape == (4, 5, 9)
    assert torch.isfinite(m.ensemble_log_prob(x)).all()


class TestMADEWithManyMasks(PriorContract):
    """The chain-rule contract holds for a model trained over many orderings (mask 0 decodes)."""

    @pytest.fixture
    def make_prior(self):
        return lambda v, layout, **kw: MADE(MADEConfig(n_hidden=32, n_layer=2, n_masks=5, block_size=16,
                                                       **kw), vocab_size=v, layout=layout)


def small(name: str, vocab: int = 3, layout: Layout | None = None):
    torch.manual_seed(0)
    layout = layout or Layout.seq()
    if name == "fvsbn":
        m = FVSBN(FVSBNConfig(n_embd=4, block_size=8), vocab, layout)
    elif name == "nade":
        m = NADE(NADEConfig(n_embd=4, n_hidden=16, block_size=8), vocab, layout)
    elif name == "made":
        m = MADE(MADEConfig(n_embd=4, n_hidden=16, n_layer=2, n_masks=3, block_size=8), vocab, layout)
    else:
        m = RNN(RNNConfig(n_layer=2, n_embd=8, n_hidden=16), vocab, layout)
    with torch.no_grad():  # sharper distributions than the init gives: decodings then differ
        for p in m.parameters():
            p.mul_(4)
    return m.eval()


NEW = ["fvsbn", "nade", "made", "rnn"]


@pytest.mark.parametrize("name", NEW)
def test_every_decoding_strategy(name):
    m, N = small(name), 4
    seqs = torch.tensor(list(itertools.product(range(3), repeat=N)))
    with torch.no_grad():
        logp = m.log_prob(seqs)
    # greedy: the argmax chain
    greedy = generate(m, 1, DecodeConfig(max_new_tokens=N, greedy=True)).tokens[0]
    ids = torch.empty(1, 0, dtype=torch.long)
    with torch.no_grad():
        for _ in range(N):
            params = m.init_state(1).params if not ids.size(1) else m(torch.cat([ids, ids[:, :1]], 1))[:, -1]
            ids = torch.cat([ids, params.argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, ids[0])
    # beam search wide enough to be exhaustive finds the most likely sequence
    beam = generate(m, 1, DecodeConfig(max_new_tokens=N, num_beams=27, length_penalty=0.0)).tokens[0]
    assert torch.equal(beam, seqs[logp.argmax()])
    # sampling (with processors) is seeded and valid; its frequencies follow the model
    g = torch.Generator().manual_seed(0)
    draws = generate(m, 16000, DecodeConfig(max_new_tokens=N), generator=g).tokens
    freq = torch.bincount((draws * torch.tensor([27, 9, 3, 1])).sum(1), minlength=81).double() / 16000
    assert 0.5 * (freq - logp.double().exp()).abs().sum() < 0.04
    topk = generate(m, 3, DecodeConfig(max_new_tokens=N, top_k=2, temperature=0.7),
                    generator=torch.Generator().manual_seed(1)).tokens
    assert topk.shape == (3, N) and topk.max() < 3
    # speculative decoding: greedy equals greedy; with itself as draft every draft is accepted
    spec = generate(m, 1, DecodeConfig(max_new_tokens=N, greedy=True, num_draft_tokens=2),
                    draft=small("rnn" if name != "rnn" else "nade"))
    assert torch.equal(spec.tokens[0], greedy)
    same = generate(m, 1, DecodeConfig(max_new_tokens=N, num_draft_tokens=2), draft=small(name),
                    generator=torch.Generator().manual_seed(2))
    assert same.acceptance_rate == 1.0


@pytest.mark.parametrize("name", ["fvsbn", "nade", "made"])
def test_rewind_reorder_and_the_end_of_the_window(name):
    m = small(name)
    ids = torch.randint(0, 3, (3, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = m(ids)
        _, state = m.init_state(3)
        out, state = m.step(state, ids[:, :6])
        torch.testing.assert_close(out, full[:, 1:7], atol=1e-5, rtol=1e-5)
        state = m.rewind(state, 4)
        out, state = m.step(state, ids[:, 2:3])
        torch.testing.assert_close(out[:, -1], full[:, 3], atol=1e-5, rtol=1e-5)
        state = m.reorder_state(state, torch.tensor([2, 2, 0]))
        out, state = m.step(state, ids[[2, 2, 0], 3:4])
        torch.testing.assert_close(out[:, -1], full[[2, 2, 0], 4], atol=1e-5, rtol=1e-5)
        _, state = m.step(state, ids[[2, 2, 0], 4:8])  # all 8 positions written
        with pytest.raises(DecodingError, match="8 positions"):
            m.step(state, ids[:, :1])


@pytest.mark.parametrize("name", ["fvsbn", "nade", "made"])
def test_fixed_length_priors_start_from_the_bit_itself(name):
    """A binary pixel enters FVSBN, NADE and MADE as 0 or 1 (the papers' input), whatever the
    seed: a random 1-wide embedding left some seeds' NADE stuck at the pixel marginals."""
    cls, cfg = {"fvsbn": (FVSBN, FVSBNConfig), "nade": (NADE, NADEConfig), "made": (MADE, MADEConfig)}[name]
    for seed in range(3):
        torch.manual_seed(seed)
        m = cls(cfg(head="bernoulli"), 2, Layout.grid(2, 2))
        assert m.embed.weight.flatten().tolist() == [0.0, 1.0]
    wide = cls(cfg(head="categorical", n_embd=3), 3, Layout.grid(2, 2))  # dummy coding, then zeros
    assert wide.embed.weight.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
