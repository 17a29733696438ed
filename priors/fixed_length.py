"""What FVSBN, NADE and MADE share: priors over a fixed number of positions, each with weights of
its own (one logistic regression, one column of hidden weights, one masked unit per position).

Such a prior has `length` positions: the layout's (a grid, a feature vector) or, for sequence
layouts, `block_size`. `forward` takes up to `length` positions: a shorter input is padded with
zeros and the params of its own positions returned, which is exact because position t only ever
reads positions before it. Sequences longer than `length` are scored in windows by the
likelihood module (`max_length`), like a GPT's.

Decoding keeps the values fed so far in a (B, length[, D]) buffer, plus whatever running tensor
makes a step cheap (NADE's hidden pre-activation, MADE's first layer); `rewind` drops the last n
values and recomputes that running tensor from the buffer, `reorder_state` selects rows (beam
search).

Not here: sliding past `length` while decoding (generation is one window: at most `length`
values); class conditioning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from plugins.errors import DecodingError, LayoutError
from plugins.registry import Registry
from plugins.shared import Layout
from priors.base import Prior, PriorConfig, StepOutput, embedding


class FixedLengthConfig(PriorConfig):
    n_embd: int = Field(1, ge=1, description="input width per position: 1 is exact for binary data "
                        "and one real; give categorical data more (a one-hot needs V)")
    block_size: int = Field(256, ge=1, description="positions modelled, for sequence layouts "
                            "(grids and vectors use their own size)")


@dataclass
class FixedLengthState:
    values: torch.Tensor  # (B, length) ids or (B, length, D) reals; zeros from `pos` on
    pos: int  # values fed
    running: torch.Tensor | None = None  # (B, ...) what makes a step cheap; None if nothing
    cache: Any = None  # per-decoding constants (masked weights): not per row


class FixedLengthPrior(Prior):
    """Base of priors with `length` positions. Subclasses implement `_params` (all positions of a
    full-length input), `_next` (the params of position `state.pos` from the state) and, when
    they keep a running tensor, `_refresh` and `_feed`."""

    Config = FixedLengthConfig
    continuous_inputs = True

    def __init__(self, config: FixedLengthConfig, vocab_size: int, layout: Layout,
                 heads: Registry | None = None):
        super().__init__(config, vocab_size, layout, heads)
        self.length = layout.length if layout.length is not None else config.block_size
        self.embed = embedding(self.space, config.n_embd)
        if not self.space.continuous and config.n_embd >= self.space.size - 1:
            dummy_coding_(self.embed.weight)

    @property
    def max_length(self) -> int:
        return self.length

    # -- what subclasses provide ---------------------------------------------------------------
    def _params(self, x: torch.Tensor) -> torch.Tensor:
        """Head params (B, length, P) of a full-length input x (B, length[, D])."""
        raise NotImplementedError

    def _next(self, state: FixedLengthState) -> torch.Tensor:
        """Head params (B, P) of position state.pos, given values[:, :pos]."""
        raise NotImplementedError

    def _refresh(self, state: FixedLengthState) -> None:
        """Recompute state.running from values[:, :pos] (after init, a rewind)."""

    def _feed(self, state: FixedLengthState, t: int) -> None:
        """Update state.running with the value just written at position t."""

    def _cache(self) -> Any:
        """Constants for one decoding (masked weights), computed once in init_state."""
        return None

    # -- shared behaviour ------------------------------------------------------------------------
    def _embedded(self, x: torch.Tensor) -> torch.Tensor:
        """Values (B, T[, D]) -> inputs (B, T, n_embd)."""
        return self.embed(x.float() if self.space.continuous else x)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B, T = x.shape[:2]
        if self.length < T:
            raise LayoutError(f"prior '{self.name}' models {self.length} positions, got {T}; "
                              f"raise prior.block_size or train on shorter windows.")
        if self.length > T:  # later positions never reach earlier ones: pad, then drop
            pad = (0, 0, 0, self.length - T) if self.space.continuous else (0, self.length - T)
            x = F.pad(x, pad)
        return self._params(x)[:, :T]

    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        p = next(self.parameters())
        shape = (batch_size, self.length, *((self.space.size,) if self.space.continuous else ()))
        values = torch.zeros(shape, dtype=p.dtype if self.space.continuous else torch.long,
                             device=p.device)
        state = FixedLengthState(values, 0, cache=self._cache())
        self._refresh(state)
        return StepOutput(self._next(state), state)

    def step(self, state: FixedLengthState, x: torch.Tensor) -> StepOutput:
        if state.pos + x.size(1) > self.length:
            raise DecodingError(
                f"prior '{self.name}' models {self.length} positions; {state.pos} were fed and "
                f"{x.size(1)} more asked for. Generate at most {self.length} values "
                "(sample.max_new_tokens), or raise prior.block_size.")
        outs = []
        for j in range(x.size(1)):
            t = state.pos
            state.values[:, t] = x[:, j]
            self._feed(state, t)
            state.pos = t + 1
            if state.pos < self.length:
                outs.append(self._next(state))
            else:  # the last position is written: nothing is left to predict
                outs.append(torch.zeros(x.size(0), self.n_params, device=x.device))
        return StepOutput(torch.stack(outs, dim=1), state)

    @property
    def max_rewind(self) -> int:
        return self.length

    def rewind(self, state: FixedLengthState, n: int) -> FixedLengthState:
        if n <= 0:
            return state
        if n > state.pos:
            raise ValueError(f"cannot rewind {n} values: only {state.pos} were fed")
        state.pos -= n
        state.values[:, state.pos :] = 0
        self._refresh(state)
        return state

    def reorder_state(self, state: FixedLengthState, index: torch.Tensor) -> FixedLengthState:
        running = state.running.index_select(0, index) if state.running is not None else None
        return FixedLengthState(state.values.index_select(0, index), state.pos, running, state.cache)


@torch.no_grad()
def dummy_coding_(table: torch.Tensor) -> None:
    """Start a (V, E) value table, E >= V - 1, at the inputs of the papers: value v is the
    indicator of v in dimensions 0 .. V-2, value 0 all zeros (so a bit is the bit itself, as
    FVSBN, NADE and MADE take binary pixels), any further dimensions zero.

    A random start is the same model (an affine map of the indicators) but can learn very
    slowly: with one dimension for a bit, the two rows' gap scales everything the hidden units
    see, and a small gap (seeds where the two draws land close) left NADE at the pixel
    marginals, 206 nats on binarized MNIST, where the exact bit trains."""
    V = table.size(0)
    table.zero_()
    table[1:, : V - 1] = torch.eye(V - 1)
