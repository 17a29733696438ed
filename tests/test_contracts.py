"""The shipped contract suites, run over every registered tokenizer and prior."""

from __future__ import annotations

import pytest
import torch

from plugins import get_registries
from priors.testing import VOCAB, PriorContract
from tokenizers_ar import Layout
from tokenizers_ar.testing import TokenizerContract, example_data

TOKENIZERS = get_registries().tokenizers.names()
PRIORS = get_registries().priors.names()


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


# every registered prior, on every layout kind it declares (no skips)
PRIOR_CASES = [(name, kind) for name in PRIORS
               for kind in sorted(get_registries().priors.get(name).layouts)]


class TestRegisteredPriors(PriorContract):
    @pytest.fixture(params=PRIOR_CASES, ids=[f"{n}-{k}" for n, k in PRIOR_CASES])
    def case(self, request):
        return request.param

    @pytest.fixture
    def prior(self, case, make_prior):
        torch.manual_seed(0)
        return make_prior(VOCAB, Layout.seq() if case[1] == "seq" else Layout.grid(3, 4)).eval()

    @pytest.fixture
    def make_prior(self, case):
        cls = get_registries().priors.get(case[0])
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
    assert {"bpe", "char", "mulaw", "pixel", "vqvae", "vqgan"} <= set(TOKENIZERS)
    assert {"gpt", "lstm", "pixelcnn", "wavenet"} <= set(PRIORS)
