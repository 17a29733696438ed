"""NADE: the neural autoregressive distribution estimator (Larochelle & Murray 2011, "The Neural
Autoregressive Distribution Estimator", AISTATS).

FVSBN gives every position its own logistic regression; NADE shares one hidden layer among all
of them. Position t's hidden units read the earlier positions through the columns of one weight
matrix W, and its own output weights V_t map them to the head's params:

    a_t = c + sum_{s<t} W[:, s] x_s          h_t = sigmoid(a_t)
    p(x_t | x_<t) = head(b_t + V_t h_t)      (Bernoulli: sigmoid(b_t + V_t . h_t))

Because a_{t+1} = a_t + W[:, t] x_t, all T pre-activations come from one running sum: the
likelihood of a whole vector costs O(T H), not O(T^2 H). Here the input x_s is the position's
embedding (`n_embd` wide: exactly the bit, up to an affine map, for binary data with width 1),
so W holds one H x n_embd block per position.

That work is a few multiply-adds per hidden unit and position, so done as whole-tensor PyTorch
ops it is bound by memory: the (T, B, H) activations, 157 MB for a batch of 100 MNIST digits,
go to DRAM and back a dozen times per step. `_NADELayer` walks the positions in blocks of a few
instead, so each block's activations stay in cache, and writes the backward pass by hand (the
paper's O(TH) gradient, eq. 6-10: the gradient of a_t flows to every earlier column of W
through one reverse running sum), recomputing each block's activations from the running sum
kept at its start rather than storing them.

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

from plugins.registry import Registry
from plugins.shared import Layout
from priors.fixed_length import FixedLengthConfig, FixedLengthPrior, FixedLengthState


class NADEConfig(FixedLengthConfig):
    n_hidden: int = Field(500, ge=1, description="hidden units H (500 in the paper)")


class NADE(FixedLengthPrior):
    name = "nade"
    Config = NADEConfig

    def __init__(self, config: NADEConfig, vocab_size: int, layout: Layout,
                 heads: Registry | None = None):
        super().__init__(config, vocab_size, layout, heads)
        T, P, E, H = self.length, self.n_params, config.n_embd, config.n_hidden
        self.W = nn.Parameter(torch.randn(T, E, H) / math.sqrt(T * E))  # input -> hidden, per position
        self.c = nn.Parameter(torch.zeros(H))
        self.V = nn.Parameter(torch.randn(T, H, P) / math.sqrt(H))  # hidden -> params, per position
        self.b = nn.Parameter(torch.zeros(T, P))

    def _params(self, x: torch.Tensor) -> torch.Tensor:
        e = self._embedded(x).transpose(0, 1)  # (T, B, E): positions outermost
        return _NADELayer.apply(e, self.W, self.c, self.V, self.b).transpose(0, 1)  # (B, T, P)

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


BLOCK = 8  # positions per block: 8 x 100 x 500 activations (1.6 MB) stay in cache; 4 and 16 were slower


def _block_preactivations(e: torch.Tensor, W: torch.Tensor, a0: torch.Tensor):
    """a_t = a0 + sum_{s<t} W_s^T e_s for the block's positions (k, B, H), and the running sum
    after the block (B, H). A loop of adds: cumsum along a dimension this short is slower."""
    u = e * W if e.size(-1) == 1 else torch.bmm(e, W)  # (k, B, H): each position's column(s)
    a = torch.empty_like(u)
    for i in range(u.size(0)):
        a[i] = a0
        a0 = a0 + u[i]
    return a, a0


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class _NADELayer(torch.autograd.Function):
    """params_t = b_t + V_t^T sigmoid(c + sum_{s<t} W_s^T e_s) for all T positions:
    e (T, B, E), W (T, E, H), c (H,), V (T, H, P), b (T, P) -> (T, B, P), in at least float32."""

    @staticmethod
    def forward(ctx, e, W, c, V, b):
        with torch.autocast(e.device.type, enabled=False):
            e, W, c, V, b = (_full(t) for t in (e, W, c, V, b))
            T, B, _ = e.shape
            out = e.new_empty(T, B, V.size(-1))
            starts, a0 = [], c.expand(B, -1)
            for t0 in range(0, T, BLOCK):
                blk = slice(t0, t0 + BLOCK)
                starts.append(a0)
                a, a0 = _block_preactivations(e[blk], W[blk], a0)
                torch.baddbmm(b[blk, None], torch.sigmoid(a), V[blk], out=out[blk])
            ctx.save_for_backward(e, W, V, torch.stack(starts))
        return out

    @staticmethod
    def backward(ctx, g):
        e, W, V, starts = ctx.saved_tensors
        g = _full(g)
        T, B, _ = e.shape
        de, dW, dV = torch.empty_like(e), torch.empty_like(W), torch.empty_like(V)
        later = g.new_zeros(B, W.size(-1))  # sum of dL/da_t over the positions after the block
        for j in reversed(range(starts.size(0))):
            blk = slice(j * BLOCK, (j + 1) * BLOCK)
            a, _ = _block_preactivations(e[blk], W[blk], starts[j])
            h = torch.sigmoid(a)
            torch.bmm(h.transpose(1, 2), g[blk], out=dV[blk])
            da = torch.ops.aten.sigmoid_backward(torch.bmm(g[blk], V[blk].transpose(1, 2)), h)  # dL/da_t
            # u_s reaches every a_t with t > s: dL/du_s = sum_{t>s} dL/da_t
            du = torch.empty_like(da)
            for i in reversed(range(da.size(0))):
                du[i] = later
                later = later + da[i]
            if e.size(-1) == 1:
                torch.sum(e[blk] * du, 1, keepdim=True, out=dW[blk])
                torch.sum(du * W[blk], 2, keepdim=True, out=de[blk])
            else:
                torch.bmm(e[blk].transpose(1, 2), du, out=dW[blk])
                torch.bmm(du, W[blk].transpose(1, 2), out=de[blk])
        return de, dW, later.sum(0), dV, g.sum(1)
