"""LSTM prior: Karpathy's char-rnn (2015), a multi-layer LSTM language model (Hochreiter &
Schmidhuber 1997; Graves 2013), as a tokar prior.

Training runs PyTorch's fused `nn.LSTM` over the whole sequence at once. Decoding carries the
recurrent state (h, c) through `step`, so every strategy in priors/generate.py works on it
unchanged. As in priors/gpt.py, a learned start vector is the input at position 0, so the first
token is predicted too and log-likelihoods are exact; class conditioning adds a class vector
to it. The state also remembers the last `max_rewind` (h, c) pairs, so the LSTM can serve as a
speculative-decoding draft (rewind) and in beam search (reorder).

Unlike a transformer there is no context limit: `max_length` is None, training uses
`train.seq_len` windows, and scoring carries the state across a whole document.
priors/lstm_exact.py is the same network in integer arithmetic, for portable compression.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import Field
from torch import nn

from plugins.shared import Layout
from priors.base import Prior, PriorConfig, StartToken, StepOutput, embedding
from priors.lstm_exact import LSTMExactCoder


class LSTMConfig(PriorConfig):
    n_layer: int = Field(2, ge=1)
    n_embd: int = Field(128, ge=1, description="token embedding width")
    n_hidden: int = Field(512, ge=1, description="LSTM state width (char-rnn's rnn_size)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="between layers and before the head")
    tie_embeddings: bool = Field(False, description="share input and output embeddings "
                                 "(Press & Wolf 2017; categorical head only); the state is "
                                 "projected to n_embd first")
    n_classes: int = Field(0, ge=0)
    max_rewind: int = Field(16, ge=0, description="tokens a decoding state can rewind")


@dataclass
class LSTMState:
    h: torch.Tensor  # (n_layer, B, n_hidden)
    c: torch.Tensor
    history: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # older (h, c)


class LSTM(Prior):
    name = "lstm"
    Config = LSTMConfig
    continuous_inputs = True
    exact_coder_class = LSTMExactCoder  # portable compression: integer-exact pmfs

    def __init__(self, config: LSTMConfig, vocab_size: int, layout: Layout):
        super().__init__(config, vocab_size, layout)
        c = config
        if c.tie_embeddings and self.distribution.name != "categorical":
            raise ValueError("lstm tie_embeddings shares the token embedding with the V logits of "
                             f"a categorical head; head '{self.distribution.name}' has none")
        self.wte = embedding(self.space, c.n_embd)
        self.start = StartToken(c.n_embd, c.n_classes)
        self._build_core(c)
        self.drop = nn.Dropout(c.dropout)
        if c.tie_embeddings:
            self.proj = nn.Linear(c.n_hidden, c.n_embd)
            self.head = nn.Linear(c.n_embd, self.n_params, bias=True)
            self.head.weight = self.wte.weight
        else:
            self.proj = nn.Identity()
            self.head = nn.Linear(c.n_hidden, self.n_params)

    def _build_core(self, c: LSTMConfig) -> None:
        self.lstm = nn.LSTM(c.n_embd, c.n_hidden, c.n_layer, batch_first=True,
                            dropout=c.dropout if c.n_layer > 1 else 0.0)

    def _core(self, x: torch.Tensor, hc: tuple[torch.Tensor, torch.Tensor] | None = None):
        """The recurrence over x (B, k, n_embd): outputs (B, k, n_hidden) and the new (h, c)."""
        return self.lstm(x, hc)

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        return self.head(self.proj(self.drop(out)))  # (B, T, n_params)

    def forward(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B, T = ids.shape[:2]
        if T == 0:
            return torch.empty(B, 0, self.n_params, device=ids.device)
        x = torch.cat([self.start(B, cond), self.wte(ids[:, :-1])], dim=1)  # (B, T, n_embd)
        out, _ = self._core(x)
        return self._logits(out)

    # -- incremental decoding ------------------------------------------------------------------
    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        out, (h, c) = self._core(self.start(batch_size, cond))
        return StepOutput(self._logits(out)[:, -1], LSTMState(h, c))

    def step(self, state: LSTMState, ids: torch.Tensor) -> StepOutput:
        k, keep = ids.size(1), self.config.max_rewind
        x = self.wte(ids)  # (B, k, n_embd)
        # Fused over the tokens no rewind can reach; one at a time over the last `keep`, so
        # that each of their states is remembered.
        fused = max(0, k - keep)
        outs, h, c = [], state.h, state.c
        if fused:
            out, (h, c) = self._core(x[:, :fused], (h, c))
            outs.append(out)
            state.history.clear()
        history = state.history
        cells = not self.training or self.config.dropout == 0
        for t in range(fused, k):
            history.append((h, c))
            if cells:  # one token through the layers' cells: far cheaper than a module call
                out, (h, c) = self._cells(x[:, t], h, c)
            else:  # training with dropout: the module applies it between layers
                out, (h, c) = self._core(x[:, t : t + 1], (h, c))
            outs.append(out)
        del history[: max(0, len(history) - keep)]
        state.h, state.c = h, c
        return StepOutput(self._logits(torch.cat(outs, dim=1)), state)

    def _cells(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """One token through the layers with `torch.lstm_cell`, x (B, n_embd): the same
        arithmetic as nn.LSTM, which on CPU costs about 6x more per single-token call (its
        setup, not its math; measured in BENCHMARKS.md, issue 18)."""
        lstm, hs, cs = self.lstm, [], []
        for i in range(self.config.n_layer):
            h_i, c_i = torch.lstm_cell(x, (h[i], c[i]), getattr(lstm, f"weight_ih_l{i}"),
                                       getattr(lstm, f"weight_hh_l{i}"),
                                       getattr(lstm, f"bias_ih_l{i}"), getattr(lstm, f"bias_hh_l{i}"))
            hs.append(h_i)
            cs.append(c_i)
            x = h_i
        return x[:, None], (torch.stack(hs), torch.stack(cs))  # (B, 1, H), (n_layer, B, H) x 2

    @property
    def max_rewind(self) -> int:
        return self.config.max_rewind

    def rewind(self, state: LSTMState, n: int) -> LSTMState:
        if n <= 0:
            return state
        if n > len(state.history):
            raise ValueError(f"cannot rewind {n} tokens: this state remembers "
                             f"{len(state.history)} (lstm.max_rewind={self.config.max_rewind})")
        state.h, state.c = state.history[-n]
        del state.history[-n:]
        return state

    def reorder_state(self, state: LSTMState, index: torch.Tensor) -> LSTMState:
        pick = lambda t: t.index_select(1, index)  # noqa: E731 - (n_layer, B, H)
        return LSTMState(pick(state.h), pick(state.c),
                         [(pick(h), pick(c)) for h, c in state.history])
