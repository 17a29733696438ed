"""A causal MLP prior, the neural language model of Bengio et al. (2003): the embeddings of the
previous `context` positions, concatenated, go through one tanh hidden layer to the head's
parameters. Position t sees positions t - context .. t - 1 (learned start vectors before the
first), so it is causal by construction, and incremental decoding keeps the last embeddings as
its state (enough of them to rewind `max_rewind` positions, which speculative decoding needs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import nn

from plugins.shared import Layout
from priors import Prior, PriorConfig, StepOutput
from priors.base import embedding


class CausalMLPConfig(PriorConfig):
    context: int = Field(4, ge=1, description="previous positions the MLP sees")
    n_embd: int = Field(32, ge=1)
    n_hidden: int = Field(128, ge=1)
    max_rewind: int = Field(16, ge=0, description="positions a decoding state can forget")


@dataclass
class MLPState:
    past: torch.Tensor  # (B, n, n_embd): the newest n embeddings fed, start vectors first


class CausalMLP(Prior):
    name = "causal_mlp"
    Config = CausalMLPConfig
    layouts = frozenset({"seq", "grid"})
    continuous_inputs = True  # embedding() reads real vectors too

    def __init__(self, config: CausalMLPConfig, vocab_size: int, layout: Layout):
        super().__init__(config, vocab_size, layout)  # builds self.distribution, the head
        c = config
        self.embed = embedding(self.space, c.n_embd)
        self.start = nn.Parameter(torch.randn(c.context, c.n_embd) * 0.1)
        self.mlp = nn.Sequential(nn.Linear(c.context * c.n_embd, c.n_hidden), nn.Tanh(),
                                 nn.Linear(c.n_hidden, self.n_params))

    def _params(self, padded: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, context - 1 + T, E) -> params (B, T, P): one window per position."""
        k = self.config.context
        windows = padded.unfold(1, k, 1)  # (B, T, E, k)
        return self.mlp(windows.transpose(2, 3).flatten(2))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B = x.size(0)
        past = torch.cat([self.start.expand(B, -1, -1), self.embed(x[:, :-1])], dim=1)
        return self._params(past)

    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        past = self.start.expand(batch_size, -1, -1)
        return StepOutput(self._params(past)[:, -1], MLPState(past))

    def step(self, state: MLPState, x: torch.Tensor) -> StepOutput:
        k = self.config.context
        past = torch.cat([state.past, self.embed(x)], dim=1)
        params = self._params(past[:, -(k + x.size(1) - 1) :])
        state.past = past[:, -(k + self.config.max_rewind) :]  # bounded memory
        return StepOutput(params, state)

    @property
    def max_rewind(self) -> int:
        return self.config.max_rewind

    def rewind(self, state: MLPState, n: int) -> MLPState:
        if n > state.past.size(1) - self.config.context:
            raise ValueError(f"cannot rewind {n} positions: this state remembers "
                             f"{state.past.size(1) - self.config.context}")
        if n > 0:
            state.past = state.past[:, :-n]
        return state

    def reorder_state(self, state: MLPState, index: torch.Tensor) -> MLPState:
        return MLPState(state.past.index_select(0, index))
