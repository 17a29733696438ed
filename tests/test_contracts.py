"""The shipped contract suites, run over every registered tokenizer and prior."""

from __future__ import annotations

import pytest

from plugins import get_registries
from priors.testing import PriorContract
from tokenizers_ar.testing import TokenizerContract, example_data

TOKENIZERS = get_registries().tokenizers.names()
PRIORS = get_registries().priors.names()


class TestRegisteredTokenizers(TokenizerContract):
    @pytest.fixture(params=TOKENIZERS)
    def tokenizer(self, request):
        cls = get_registries().tokenizers.get(request.param)
        tok = cls()
        tok.fit(example_data(cls.modality, n=8))
        return tok

    @pytest.fixture
    def examples(self, tokenizer):
        return example_data(tokenizer.modality, n=4, seed=1)


class TestRegisteredPriors(PriorContract):
    @pytest.fixture(params=PRIORS)
    def make_prior(self, request):
        cls = get_registries().priors.get(request.param)
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


def test_every_builtin_is_covered():
    assert {"char", "pixel"} <= set(TOKENIZERS)
    assert "gpt" in PRIORS
