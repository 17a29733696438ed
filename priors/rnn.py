"""The plain recurrent network of the lectures (Elman 1990; as a character model, Sutskever,
Martens & Hinton 2011), one step before the LSTM:

    h_t = tanh(W_hh h_{t-1} + W_xh x_t + b),      p(x_{t+1} | x_<=t) = head(W_hy h_t)

It is the `lstm` prior with the LSTM cell swapped for PyTorch's fused `nn.RNN` (tanh): the same
embedding, learned start vector (so the first token is predicted too), class conditioning,
output layer, dropout between layers and decoding state, with its rewind history and beam
reordering. So the two compare on one scale, in the same recipes, by changing `prior.name`.
The state keeps the LSTM's (h, c) shape; a plain RNN has no cell, so c is an empty tensor.

Not here: gradient clipping by value or orthogonal/identity initialisation (IRNN, Le et al.
2015); the trainer's norm clipping (`train.grad_clip`) is what keeps it stable.
"""

from __future__ import annotations

import torch
from torch import nn

from priors.lstm import LSTM, LSTMConfig
from priors.lstm_exact import RNNExactCoder


class RNNConfig(LSTMConfig):
    """The LSTM's settings: n_layer, n_embd, n_hidden (the state width), dropout, ..."""


class RNN(LSTM):
    name = "rnn"
    Config = RNNConfig
    exact_coder_class = RNNExactCoder

    def _build_core(self, c: LSTMConfig) -> None:
        self.rnn = nn.RNN(c.n_embd, c.n_hidden, c.n_layer, nonlinearity="tanh", batch_first=True,
                          dropout=c.dropout if c.n_layer > 1 else 0.0)

    def _core(self, x: torch.Tensor, hc: tuple[torch.Tensor, torch.Tensor] | None = None):
        out, h = self.rnn(x, None if hc is None else hc[0])
        return out, (h, h[..., :0])  # no cell state: an empty c rides along

    def _cells(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """One token through the layers with `torch.rnn_tanh_cell` (the LSTM's reason: a module
        call per token costs more than its arithmetic on CPU)."""
        rnn, hs = self.rnn, []
        for i in range(self.config.n_layer):
            x = torch.rnn_tanh_cell(x, h[i], getattr(rnn, f"weight_ih_l{i}"),
                                    getattr(rnn, f"weight_hh_l{i}"),
                                    getattr(rnn, f"bias_ih_l{i}"), getattr(rnn, f"bias_hh_l{i}"))
            hs.append(x)
        h = torch.stack(hs)
        return x[:, None], (h, h[..., :0])
