"""The shipped contract suites, run over every registered tokenizer, prior and head."""

from __future__ import annotations

import pytest
import torch

from plugins import get_registries
from plugins.shared import ValueSpace
from priors.testing import LAYOUTS, VOCAB, HeadContract, PriorContract, layouts_for, vocab_for
from tokenizers_ar.testing import TokenizerContract, example_data

TOKENIZERS = get_registries().tokenizers.names()
PRIORS = get_registries().priors.names()
HEADS = get_registries().heads.names()


# module scope: a trained tokenizer (VQ) is fitted once, not once per check
@pytest.fixture(params=TOKENIZERS, scope="module")
def fitted_tokenizer(request):
    cls = get_registries().tokenizers.get(request.param)
    tok = cls(**cls.smoke_settings)
    tok.fit(example_data(cls.modality, n=8))
    return tok


class TestRegisteredTokenizers(TokenizerContract):
    @pytest.fixture
    def tokenizer(self, fitted_tokenizer):
        return fitted_tokenizer

    @pytest.fixture
    def examples(self, tokenizer):
        return example_data(tokenizer.modality, n=4, seed=1)


def _head_fits(head: str, layout_key: str) -> bool:
    layout = LAYOUTS[layout_key]
    cls = get_registries().heads.get(head)
    space = layout.space(vocab_for(head))
    return not cls.check_space(space, cls.Config())


# every registered prior, on every layout it models, with every head that fits it (no skips)
PRIOR_CASES = [(name, key, head) for name in PRIORS
               for key in layouts_for(get_registries().priors.get(name))
               for head in HEADS if _head_fits(head, key)]


class TestRegisteredPriors(PriorContract):
    @pytest.fixture(params=PRIOR_CASES, ids=[f"{n}-{k}-{h}" for n, k, h in PRIOR_CASES])
    def named_case(self, request):
        return request.param

    @pytest.fixture
    def case(self, named_case):
        return named_case[1:]

    @pytest.fixture
    def make_prior(self, named_case):
        cls = get_registries().priors.get(named_case[0])
        small = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16}
        fields = cls.Config.model_fields

        def make(vocab_size, layout, **extra):
            config = cls.Config(**{k: v for k, v in {**small, **extra}.items() if k in fields})
            return cls(config, vocab_size=vocab_size, layout=layout)

        return make


class TestConditionalGPT(PriorContract):
    """The same contract with class conditioning on."""

    @pytest.fixture
    def make_prior(self):
        from priors.gpt import GPT, GPTConfig

        return lambda v, layout: GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16,
                                               n_classes=3), vocab_size=v, layout=layout)


# every registered head, on a discrete and a continuous space where it fits
HEAD_CASES = [(name, space) for name in HEADS
              for space in (ValueSpace.discrete(vocab_for(name)), ValueSpace.real(1), ValueSpace.real(2))
              if not get_registries().heads.get(name).check_space(
                  space, get_registries().heads.get(name).Config())]


class TestRegisteredHeads(HeadContract):
    @pytest.fixture(params=HEAD_CASES, ids=[f"{n}-{s.size}{'r' if s.continuous else 'v'}"
                                            for n, s in HEAD_CASES])
    def case(self, request):
        return request.param

    @pytest.fixture
    def space(self, case):
        return case[1]

    @pytest.fixture
    def head(self, case, space):
        cls = get_registries().heads.get(case[0])
        return cls(cls.Config(), space)


def test_every_builtin_is_covered():
    assert {"bpe", "char", "mulaw", "pixel", "vqvae", "vqgan"} <= set(TOKENIZERS)
    assert {"gpt", "lstm", "pixelcnn", "wavenet", "fvsbn", "nade", "made", "rnn", "ngram_lm"} <= set(PRIORS)
    assert {"categorical", "bernoulli", "logistic_mixture", "gaussian", "gaussian_mixture"} <= set(HEADS)
    # every prior takes every head its data allows: discrete heads everywhere, continuous heads
    # on the priors that read real values
    for name in PRIORS:
        cls = get_registries().priors.get(name)
        heads = {h for n, _, h in PRIOR_CASES if n == name}
        assert {"categorical", "bernoulli", "logistic_mixture"} <= heads, name
        if cls.continuous_inputs:
            assert {"gaussian", "gaussian_mixture"} <= heads, name
    assert VOCAB > 2 and torch.is_tensor(torch.zeros(1))
