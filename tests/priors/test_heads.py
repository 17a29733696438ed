"""Output distributions: each head's likelihood against an independent reference, the shared
decoding path on continuous heads, and heads that do not fit the data as clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from plugins.errors import DecodingError, LayoutError, RegistryError
from plugins.shared import Layout, ValueSpace
from priors import GPT, DecodeConfig, GPTConfig, generate
from priors.heads import Bernoulli, Categorical, Gaussian, GaussianMixture, LogisticMixture, build_head


def test_gaussian_and_mixture_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    params, x = torch.randn(5, 4, generator=g), torch.randn(5, 2, generator=g)
    mean, log_std = params.chunk(2, -1)
    want = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(Gaussian(None, ValueSpace.real(2)).log_prob(params, x), want)

    head = GaussianMixture(GaussianMixture.Config(n_mixtures=3), ValueSpace.real(2))
    params = torch.randn(5, head.n_params, generator=g)
    logits, rest = params[:, :3], params[:, 3:].view(5, 2, 3, 2)
    comp = torch.distributions.Independent(torch.distributions.Normal(rest[:, 0], rest[:, 1].exp()), 1)
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits), comp)
    torch.testing.assert_close(head.log_prob(params, x), mix.log_prob(x), atol=1e-5, rtol=1e-5)


def test_bernoulli_is_the_two_way_softmax_with_one_logit():
    logit = torch.randn(6, 1)
    x = torch.tensor([0, 1, 1, 0, 1, 0])
    two_way = Categorical(None, ValueSpace.discrete(2)).log_prob(torch.cat([torch.zeros(6, 1), logit], -1), x)
    torch.testing.assert_close(Bernoulli(None, ValueSpace.discrete(2)).log_prob(logit, x), two_way)


def test_quantized_pmf_is_deterministic_and_tracks_the_probabilities():
    head = LogisticMixture(LogisticMixture.Config(n_mixtures=2), ValueSpace.discrete(256))
    params = torch.tensor([[0.0, 9.0, 0.1, -0.3, -7.0, -7.0]])  # two very sharp components
    pmf = head.quantized_pmf(params)
    assert pmf.min() == 1 and pmf.sum() == 1 << 16
    probs = torch.softmax(head.logits(params).double(), -1)
    assert (pmf[0].double() / 65536 - probs[0]).abs().max() < 256 / 65536
    assert torch.equal(pmf, head.quantized_pmf(params))  # same params, same integers


def test_temperature_narrows_a_continuous_head():
    head = GaussianMixture(GaussianMixture.Config(n_mixtures=2), ValueSpace.real(1))
    params = torch.tensor([[0.0, 0.0, -2.0, 2.0, 0.0, 0.0]]).expand(20_000, -1)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    hot, cold = head.sample(params, 1.0, g()), head.sample(params, 0.1, g())
    assert cold.std() < hot.std()
    assert abs(float(hot.mean())) < 0.1  # two symmetric components: the mean stays at 0


@pytest.mark.parametrize("name,space,needle", [
    ("gaussian", ValueSpace.discrete(256), "models real values"),
    ("categorical", ValueSpace.real(1), "models token ids"),
    ("bernoulli", ValueSpace.discrete(256), "binary values"),
])
def test_a_head_that_does_not_fit_is_a_layout_error(name, space, needle):
    with pytest.raises(LayoutError, match=needle):
        build_head(name, space)


def test_continuous_decoding_takes_temperature_and_refuses_discrete_only_options():
    torch.manual_seed(0)
    prior = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=16, head="gaussian"), 0,
                Layout.seq(dims=1)).eval()
    out = generate(prior, 3, DecodeConfig(max_new_tokens=10, temperature=0.5),
                   generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (3, 10, 1) and out.tokens.dtype == torch.float32
    for bad in ({"top_k": 3}, {"top_p": 0.9}, {"min_p": 0.1}, {"num_beams": 2},
                {"repetition_penalty": 1.2}, {"greedy": True}, {"stop_tokens": [1]},
                {"processors": [{"name": "top_k", "k": 2}]}):
        with pytest.raises(DecodingError, match="only for discrete heads"):
            generate(prior, 1, DecodeConfig(max_new_tokens=4, **bad))


def test_named_processors_are_honoured_by_generate_itself():
    """DecodeConfig(processors=[...]) used to be resolved by pipelines only; priors.generate
    now resolves names through the registry: top_k(1) by name is greedy."""
    torch.manual_seed(0)
    prior = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=16), 5, Layout.seq()).eval()
    with torch.no_grad():
        prior.wte.weight.mul_(30)
    named = generate(prior, 2, DecodeConfig(max_new_tokens=8, processors=[{"name": "top_k", "k": 1}]),
                     generator=torch.Generator().manual_seed(1)).tokens
    greedy = generate(prior, 2, DecodeConfig(max_new_tokens=8, greedy=True)).tokens
    assert torch.equal(named, greedy)
    with pytest.raises(RegistryError, match="unknown logits processor 'top_kk'"):
        generate(prior, 1, DecodeConfig(processors=[{"name": "top_kk"}]))


def test_every_prior_gives_the_head_its_parameter_count():
    """A prior's output width follows its head: V logits, 1 Bernoulli logit, 3K mixture params."""
    mixture = {"name": "logistic_mixture", "n_mixtures": 4}
    for head, want in (("categorical", 2), ("bernoulli", 1), (mixture, 12)):
        prior = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, head=head), 2, Layout.seq())
        assert prior(torch.zeros(1, 5, dtype=torch.long)).shape == (1, 5, want)
    assert math.isclose(float(LogisticMixture(None, ValueSpace.discrete(4)).n_params), 15)
