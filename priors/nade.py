"""NADE: the neural autoregressive distribution estimator (Larochelle & Murray 2011, "The Neural
Autoregressive Distribution Estimator", AISTATS).

FVSBN gives every position its own logistic regression; NADE shares one hidden layer among all
of them. Position t's hidden units read the earlier positions through the columns of one weight
matrix W, and its own output weights V_t map them to the head's params:

    a_t = c + sum_{s<t} W[:, s] x_s          h_t = sigmoid(a_t)
    p(x_t | x_<t) = head(b_t + V_t h_t)      (Bernoulli: sigmoid(b_t + V_t . h_t))

Because a_{t+1} = a_t + W[:, t] x_t, all T pre-activations come from one prefix sum: the
likelihood of a whole vector costs O(T H), not O(T^2 H) (computed in blocks of K positions,
O(T K H), which runs faster than PyTorch's cumulative sum on CPUs). Here the input x_s is the position's
embedding (`n_embd` wide: exactly the bit, up to an affine map, for binary data with width 1),
so W holds one H x n_embd block per position.

Decoding carries exactly that running pre-activation a (B, H) as its state: a step adds one
column, O(H n_embd + H P) per value. `rewind` recomputes a from the values kept.

Not here: the order-agnostic training of DeepNADE (Uria et al. 2014; see priors/made.py for
order- and connectivity-agnostic masks), the tied input/output weights variant, RNADE (the
Gaussian mixture head on real values does its job: `head: gaussian_mixture`).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from plugins.shared import Layout
from priors.fixed_length import FixedLengthConfig, FixedLengthPrior, FixedLengthState


class NADEConfig(FixedLengthConfig):
    n_hidden: int = Field(500, ge=1, description="hidden units H (500 in the paper)")


class NADE(FixedLengthPrior):
    name = "nade"
    Config = NADEConfig

    def __init__(self, config: NADEConfig, vocab_size: int, layout: Layout):
        super().__init__(config, vocab_size, layout)
        T, P, E, H = self.length, self.n_params, config.n_embd, config.n_hidden
        self.W = nn.Parameter(torch.randn(T, E, H) / math.sqrt(T * E))  # input -> hidden, per position
        self.c = nn.Parameter(torch.zeros(H))
        self.V = nn.Parameter(torch.randn(T, H, P) / math.sqrt(H))  # hidden -> params, per position
        self.b = nn.Parameter(torch.zeros(T, P))

    def _params(self, x: torch.Tensor) -> torch.Tensor:
        # Positions outermost, (T, B, H): the per-position products are batched matmuls, and
        # the prefix sum runs over contiguous (B, H) slices.
        e = self._embedded(x).transpose(0, 1).contiguous()  # (T, B, E)
        u = e * self.W if e.size(-1) == 1 else torch.bmm(e, self.W)  # (T, B, H): each u_s
        a = self.c + exclusive_prefix_sum(u)  # a_t = c + sum_{s<t} u_s
        return torch.bmm(torch.sigmoid(a), self.V).transpose(0, 1) + self.b  # (B, T, P)

    def _refresh(self, state: FixedLengthState) -> None:
        t = state.pos
        e = self._embedded(state.values[:, :t])  # (B, t, E)
        state.running = self.c + torch.einsum("bte,teh->bh", e, self.W[:t])  # (B, H)

    def _feed(self, state: FixedLengthState, t: int) -> None:
        e = self._embedded(state.values[:, t])  # (B, E)
        state.running = state.running + e @ self.W[t]

    def _next(self, state: FixedLengthState) -> torch.Tensor:
        t = state.pos
        return torch.sigmoid(state.running) @ self.V[t] + self.b[t]  # (B, P)


def exclusive_prefix_sum(u: torch.Tensor) -> torch.Tensor:
    """sum_{s<t} u_s along dim 0 of u (T, ...), in blocks of K positions: a K x K triangular
    matmul inside each block, a cumulative sum over the T/K block totals. Same result as
    cumsum minus u; faster on CPUs, where PyTorch's cumsum over tens of millions of values is slow."""
    T = u.size(0)
    K = max(k for k in range(1, 17) if T % k == 0)
    blocks = u.reshape(T // K, K, -1)  # (T/K, K, rest)
    within = torch.ones(K, K, dtype=u.dtype, device=u.device).tril(-1) @ blocks
    totals = blocks.sum(1)  # (T/K, rest)
    before = torch.cumsum(totals, 0) - totals  # every earlier block, whole
    return (within + before[:, None]).view(u.shape)
