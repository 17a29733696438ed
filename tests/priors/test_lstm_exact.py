"""The LSTM's and RNN's integer-exact coders (priors/lstm_exact.py): close to the float priors,
with tied embeddings and class conditioning; no block limit."""

from __future__ import annotations

import pytest
import torch

from priors import LSTM, LSTMConfig
from priors.rnn import RNN, RNNConfig
from tests.priors.exact_kernels import assert_close_to_float, sharpened
from tokenizers_ar import Layout


@pytest.mark.parametrize("kind, kw", [("lstm", {}), ("lstm", {"tie_embeddings": True}),
                                      ("lstm", {"n_classes": 3}), ("rnn", {})])
def test_exact_recurrence_is_close_to_the_float_one(kind, kw):
    torch.manual_seed(0)
    cls, config = (LSTM, LSTMConfig) if kind == "lstm" else (RNN, RNNConfig)
    model = sharpened(cls(config(n_layer=2, n_embd=16, n_hidden=32, **kw), 13, Layout.seq()))
    assert model.exact_coder().max_block_length is None
    assert_close_to_float(model, 13, torch.tensor([0, 1, 2, 2]) if kw.get("n_classes") else None,
                          T=64)
