"""MADE: the masked autoencoder for distribution estimation (Germain, Gregor, Murray & Larochelle
2015, "MADE: Masked Autoencoder for Distribution Estimation", ICML).

An ordinary MLP from all T positions to all T positions' head params, made autoregressive by
masking its weights: every input unit and hidden unit gets a degree, and a weight survives only
where the degrees allow, so that output t depends on exactly the positions before it in some
ordering. All conditionals then come out of one pass, as in NADE, but with any number of hidden
layers. Degrees (0-based, as in Karpathy's pytorch-made):

    input units of position s:  m(s) = its rank in the ordering, 0 .. T-1
    hidden layer l unit k:      m_l(k) ~ uniform{min m_{l-1}, .., T-2}
    hidden mask:  m_l(k) >= m_{l-1}(j)      output mask (position t): m(t) > m_L(k)
    direct input-output connection (`direct`): output t reads input s where m(s) < m(t)

`n_masks` > 1 trains over a set of masks (one drawn per training batch): with `order_agnostic`
each has its own random ordering, with `connectivity_agnostic` its own hidden degrees. Mask 0
keeps the natural (raster) ordering: it is the one `forward`, scoring and decoding use, so MADE
meets the same chain-rule contract as every prior. `ensemble_log_prob` averages the
probabilities of the first n masks at test time, log (1/n) sum_k p_k(x), the paper's ensemble
(`tokar score RUN --ensemble N`, `Pipeline.score(ensemble=N)`); `mask_log_probs` gives each
mask's own log-likelihood (priors/likelihood.py `nll` on that mask's params).

Heads: Bernoulli (binarized MNIST, as in the paper), categorical, and on real values the
Gaussian mixture (MADE-MoG, the paper's continuous variant), through `priors.base.embedding`.
Decoding (mask 0) keeps the first hidden layer's pre-activation as a running state, like NADE;
a step then costs the deeper layers and one position's output row.

Not here: resampling a fresh mask every batch (the set of masks is fixed by `mask_seed`, so that
the masks a run trained on are the ones it is ensembled over), ensembling while decoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from plugins.errors import TokarError
from plugins.registry import Registry
from plugins.shared import Layout
from priors.fixed_length import FixedLengthConfig, FixedLengthPrior, FixedLengthState
from priors.likelihood import nll


class MADEConfig(FixedLengthConfig):
    n_hidden: int = Field(500, ge=1, description="units per hidden layer")
    n_layer: int = Field(1, ge=1, description="hidden layers")
    n_masks: int = Field(1, ge=1, description="masks trained over (one per batch), ensembled at test")
    order_agnostic: bool = Field(True, description="masks after the first use random orderings")
    connectivity_agnostic: bool = Field(True, description="each mask draws its own hidden degrees")
    direct: bool = Field(True, description="direct (masked) connection from inputs to outputs")
    mask_seed: int = Field(0, description="seed of the orderings and hidden degrees")


class MADE(FixedLengthPrior):
    name = "made"
    Config = MADEConfig

    def __init__(self, config: MADEConfig, vocab_size: int, layout: Layout,
                 heads: Registry | None = None):
        super().__init__(config, vocab_size, layout, heads)
        c, T, P = config, self.length, self.n_params
        widths = [T * c.n_embd] + [c.n_hidden] * c.n_layer
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(c.n_hidden, T * P)
        self.direct = nn.Linear(T * c.n_embd, T * P, bias=False) if c.direct else None
        ranks, hidden = self._degrees()
        self.register_buffer("ranks", ranks, persistent=False)  # (n_masks, T)
        self.register_buffer("hidden_degrees", hidden, persistent=False)  # (n_masks, n_layer, H)

    def _degrees(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every mask's input ranks and hidden degrees, a function of the config alone."""
        c, T = self.config, self.length
        g = torch.Generator().manual_seed(c.mask_seed)
        ranks, hidden = [], []
        for k in range(c.n_masks):
            order = torch.randperm(T, generator=g) if k and c.order_agnostic else torch.arange(T)
            rank = torch.empty(T, dtype=torch.long)
            rank[order] = torch.arange(T)  # order[i] is the position predicted i-th
            if k and not c.connectivity_agnostic:
                layers = hidden[0]
            else:
                low, layers = 0, []
                for _ in range(c.n_layer):
                    d = (torch.randint(low, T - 1, (c.n_hidden,), generator=g) if low < T - 1
                         else torch.full((c.n_hidden,), low))  # T = 1: no hidden unit is needed
                    layers.append(d)
                    low = int(d.min())
                layers = torch.stack(layers)
            ranks.append(rank)
            hidden.append(layers)
        return torch.stack(ranks), torch.stack(hidden)

    def _masks(self, k: int) -> list[torch.Tensor]:
        """Weight masks of mask k: each hidden layer, the output layer, the direct connection."""
        E, P = self.config.n_embd, self.n_params
        inputs = self.ranks[k].repeat_interleave(E)  # degree of each input unit
        outputs = self.ranks[k].repeat_interleave(P)  # degree of each output unit
        masks, prev = [], inputs
        for d in self.hidden_degrees[k]:
            masks.append((d[:, None] >= prev[None, :]).float())
            prev = d
        masks.append((outputs[:, None] > prev[None, :]).float())
        masks.append((outputs[:, None] > inputs[None, :]).float())
        return masks

    def _masked_weights(self, k: int) -> list[torch.Tensor]:
        layers = [*self.hidden, self.out] + ([self.direct] if self.direct is not None else [])
        return [layer.weight * m for layer, m in zip(layers, self._masks(k), strict=False)]

    def _run(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Head params (B, T, P) of a full-length input under mask k."""
        B = x.size(0)
        e = self._embedded(x).reshape(B, -1)  # (B, T * E)
        weights = self._masked_weights(k)
        h = e
        for layer, w in zip(self.hidden, weights, strict=False):
            h = F.relu(F.linear(h, w, layer.bias))
        out = F.linear(h, weights[len(self.hidden)], self.out.bias)
        if self.direct is not None:
            out = out + F.linear(e, weights[-1])
        return out.view(B, self.length, self.n_params)

    def _params(self, x: torch.Tensor) -> torch.Tensor:
        k = 0
        if self.training and self.config.n_masks > 1:  # order/connectivity-agnostic training
            k = int(torch.randint(self.config.n_masks, ()))
        return self._run(x, k)

    # -- test-time ensembles -------------------------------------------------------------------
    def _ensemble_size(self, n: int | None) -> int:
        if n is None:
            return self.config.n_masks
        if not 1 <= n <= self.config.n_masks:
            raise TokarError(f"an ensemble of {n} masks was asked for, but this MADE was trained "
                             f"over {self.config.n_masks} (prior.n_masks); give 1 to "
                             f"{self.config.n_masks}")
        return n

    @torch.no_grad()
    def mask_log_probs(self, x: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """log p_k(x) in nats under each of the first n masks (default all): (n, B)."""
        n = self._ensemble_size(n)
        T = x.size(1)
        if self.length < T:
            raise TokarError(f"a sequence of {T} positions was given, but MADE's masks span "
                             f"{self.length} (prior.block_size): its ensemble scores whole "
                             "sequences only; score without an ensemble (windows) or shorter data")
        padded = F.pad(x, (0, 0, 0, self.length - T) if self.space.continuous else (0, self.length - T))
        return torch.stack([-nll(self, self._run(padded, k)[:, :T], x).sum(1) for k in range(n)])

    def ensemble_log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                          n: int | None = None) -> torch.Tensor:
        """log (1/n) sum_k p_k(x): the ensemble of the first n masks (default all), (B,).
        `cond` is ignored, as in `forward`: MADE is unconditional."""
        lp = self.mask_log_probs(x, n)
        return torch.logsumexp(lp, 0) - math.log(lp.size(0))

    # -- decoding (mask 0, raster order) -------------------------------------------------------
    def _cache(self) -> list[torch.Tensor]:
        return self._masked_weights(0)

    def _refresh(self, state: FixedLengthState) -> None:
        t, E = state.pos, self.config.n_embd
        e = self._embedded(state.values[:, :t]).flatten(1)  # (B, t * E)
        state.running = F.linear(e, state.cache[0][:, : t * E], self.hidden[0].bias)  # (B, H)

    def _feed(self, state: FixedLengthState, t: int) -> None:
        E = self.config.n_embd
        e = self._embedded(state.values[:, t])  # (B, E)
        state.running = state.running + e @ state.cache[0][:, t * E : (t + 1) * E].T

    def _next(self, state: FixedLengthState) -> torch.Tensor:
        t, E, P, L = state.pos, self.config.n_embd, self.n_params, len(self.hidden)
        h = F.relu(state.running)
        for layer, w in zip(self.hidden[1:], state.cache[1:L], strict=True):
            h = F.relu(F.linear(h, w, layer.bias))
        rows = slice(t * P, (t + 1) * P)
        out = F.linear(h, state.cache[L][rows], self.out.bias[rows])  # (B, P)
        if self.direct is not None and t:
            e = self._embedded(state.values[:, :t]).flatten(1)
            out = out + F.linear(e, state.cache[-1][rows, : t * E])
        return out
