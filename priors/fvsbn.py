"""FVSBN: the fully visible sigmoid belief network (Frey 1998, "Graphical Models for Machine
Learning and Digital Communication"; Neal 1992), the lectures' first autoregressive model.

Every position has its own logistic regression on all earlier positions:

    p(x_t = 1 | x_<t) = sigmoid(b_t + sum_{s<t} w_ts x_s)

With the Bernoulli head and `n_embd: 1` this is exactly Frey's model: the input of a binary
position, its 1-wide embedding, is an affine function of the bit, so the weights (T^2 / 2 of
them) and biases span the same functions. Other heads generalise it the obvious way: position t's
head params are an affine function of the embedded earlier positions, a multinomial logistic
regression for the categorical head, a linear mixture density for the Gaussian mixture.

Teacher forcing is one masked matrix product over the flattened input, (T x P) x (T x E) with a
strictly lower-triangular mask over positions. Decoding needs no running state: the params of
position t are b_t + W_t . e(x_<t), recomputed from the buffer of values (O(T E P) per step), so
`rewind` just moves the position back.

Not here: the cost is quadratic in the positions (about 307k weights for 28 x 28 binary images,
T^2 P E / 2 in general), so FVSBN suits small grids and vectors, not long sequences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from plugins.registry import Registry
from plugins.shared import Layout
from priors.fixed_length import FixedLengthConfig, FixedLengthPrior, FixedLengthState


class FVSBNConfig(FixedLengthConfig):
    pass


class FVSBN(FixedLengthPrior):
    name = "fvsbn"
    Config = FVSBNConfig

    def __init__(self, config: FVSBNConfig, vocab_size: int, layout: Layout,
                 heads: Registry | None = None):
        super().__init__(config, vocab_size, layout, heads)
        T, P, E = self.length, self.n_params, config.n_embd
        self.weight = nn.Parameter(torch.randn(T, P, T, E) / math.sqrt(T * E))  # (out t, P, in s, E)
        self.bias = nn.Parameter(torch.zeros(T, P))
        # position t reads positions s < t only
        self.register_buffer("mask", torch.ones(T, T).tril(-1)[:, None, :, None], persistent=False)

    def _masked(self) -> torch.Tensor:
        return self.weight * self.mask  # (T, P, T, E)

    def _params(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        e = self._embedded(x).reshape(B, -1)  # (B, T * E)
        out = F.linear(e, self._masked().reshape(T * self.n_params, -1))  # (B, T * P)
        return out.view(B, T, self.n_params) + self.bias

    def _cache(self) -> torch.Tensor:
        return self._masked()

    def _next(self, state: FixedLengthState) -> torch.Tensor:
        t = state.pos
        if t == 0:
            return self.bias[0].expand(state.values.size(0), -1)
        e = self._embedded(state.values[:, :t]).flatten(1)  # (B, t * E)
        w = state.cache[t, :, :t].flatten(1)  # (P, t * E)
        return F.linear(e, w, self.bias[t])  # (B, P)
