"""The n-gram model (Shannon 1948; the bigram that the lectures and makemore start from): the
next token depends on the last n - 1 tokens only. Here it is log-linear over every context
length up to n - 1, one table per length, trained by gradient descent like every other prior:

    params_t = b + W_1[x_{t-1}] + W_2[x_{t-2}, x_{t-1}] + ... + W_{n-1}[x_{t-n+1} .. x_{t-1}]

so an unseen long context falls back on the shorter ones it contains (back-off without counts,
as in maximum-entropy language models, Rosenfeld 1996); weight decay (`train.weight_decay`)
shrinks the rows of rarely seen contexts toward zero, the model's smoothing. Contexts before
the first token read a padding symbol, so position 0 is predicted too. A table has a row per
context while there are at most `buckets` of them; longer contexts are hashed into `buckets`
rows (Mikolov et al. 2011's hashed n-gram features), so the size stays bounded for large
vocabularies.

Why it is here: its `step` costs one row lookup per context length, next to nothing beside a
network's step, which is what a speculative-decoding draft needs (priors/drafts.py); trained on
a target's own samples (pipelines/training/distill.py, `data: {source: teacher_samples}`) it agrees with
the target more often than one trained on the data. It is also the baseline any sequence model
should beat. The state is the last n - 1 + `max_rewind` tokens.

Not here: count-based estimates (Kneser-Ney), class-conditional contexts beyond a bias per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from plugins.registry import Registry
from plugins.shared import Layout
from priors.base import Prior, PriorConfig, StepOutput

_PRIME = 2_147_483_647  # a token times base^i mod it, summed over 63 tokens, fits in int64


class NGramLMConfig(PriorConfig):
    n: int = Field(3, ge=2, le=64, description="n of n-gram: a token is predicted from the n - 1 before it")
    buckets: int = Field(1 << 16, ge=1, le=1 << 30,
                         description="rows per context length; more contexts are hashed into them")
    init_std: float = Field(0.02, ge=0, description="standard deviation of the tables' initial values")
    n_classes: int = Field(0, ge=0, description="class labels: each adds a learned bias")
    max_rewind: int = Field(64, ge=0, description="tokens a decoding state can rewind")


@dataclass
class NGramState:
    recent: torch.Tensor  # (B, n - 1 + r) the last tokens fed, padding before the first
    fed: int  # tokens fed so far (a rewind cannot go further back)
    bias: torch.Tensor  # (B, n_params): b plus the class bias


class NGramLM(Prior):
    name = "ngram_lm"
    Config = NGramLMConfig

    def __init__(self, config: NGramLMConfig, vocab_size: int, layout: Layout,
                 heads: Registry | None = None):
        super().__init__(config, vocab_size, layout, heads)
        c, P = config, self.n_params
        self.pad = self.vocab_size  # the symbol before the first token
        base = self.vocab_size + 1
        if base * (c.n - 1) >= 1 << 32:  # the hash's sum of token x base^i must fit in int64
            raise ValueError(f"ngram_lm: n = {c.n} with {self.vocab_size} tokens overflows the "
                             "context hash; use a smaller n.")
        rows = [min(base**j, c.buckets) for j in range(1, c.n)]  # rows of W_1 .. W_{n-1}
        # W_1 .. W_{n-1} stacked in one table, so every context length is one lookup
        self.table = nn.Parameter(torch.randn(sum(rows), P) * c.init_std)
        self.bias = nn.Parameter(torch.zeros(P))
        self.class_bias = nn.Parameter(torch.zeros(c.n_classes, P)) if c.n_classes else None
        long = dict(dtype=torch.long)
        self.register_buffer("rows", torch.tensor(rows, **long), persistent=False)
        self.register_buffer("offsets", torch.tensor([0, *rows[:-1]], **long).cumsum(0), persistent=False)
        # the weight of the token j places back in a context's hash: base^j mod the prime
        self.register_buffer("powers", torch.tensor([pow(base, j, _PRIME) for j in range(c.n - 1)],
                                                    **long), persistent=False)

    def _bias(self, batch_size: int, cond: torch.Tensor | None) -> torch.Tensor:
        b = self.bias.expand(batch_size, -1)
        if self.class_bias is not None:
            if cond is None:
                raise ValueError(f"this prior is class-conditional ({self.config.n_classes} "
                                 "classes): pass cond, the class labels")
            b = b + self.class_bias[cond.view(batch_size)]
        return b

    def _params(self, windows: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Params after each window of the last n - 1 tokens, windows (B, T, n - 1) -> (B, T, P).
        The context of length j is the window's last j tokens, hashed as sum_i token_i base^i
        (i places back, mod the prime): one cumulative sum gives every length's hash."""
        h = (windows.flip(-1) * self.powers).cumsum(-1) % _PRIME  # (B, T, n - 1)
        rows = F.embedding(h % self.rows + self.offsets, self.table)  # (B, T, n - 1, P)
        return rows.sum(-2) + bias[:, None, :]

    def forward(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B, T = ids.shape[:2]
        padded = F.pad(ids[:, : max(T - 1, 0)], (self.config.n - 1, 0), value=self.pad)
        windows = padded.unfold(1, self.config.n - 1, 1)  # (B, T, n - 1): the tokens before t
        return self._params(windows, self._bias(B, cond))

    # -- incremental decoding: the state is the last tokens -------------------------------------
    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        recent = torch.full((batch_size, self.config.n - 1), self.pad, dtype=torch.long,
                            device=self.bias.device)
        state = NGramState(recent, 0, self._bias(batch_size, cond))
        return StepOutput(self._params(recent[:, None], state.bias)[:, 0], state)

    def step(self, state: NGramState, ids: torch.Tensor) -> StepOutput:
        k, n = ids.size(1), self.config.n
        recent = torch.cat([state.recent, ids], 1)
        params = self._params(recent.unfold(1, n - 1, 1)[:, -k:], state.bias)  # windows ending at ids
        state.recent = recent[:, -(n - 1 + self.config.max_rewind) :]
        state.fed += k
        return StepOutput(params, state)

    @property
    def max_rewind(self) -> int:
        return self.config.max_rewind

    def rewind(self, state: NGramState, n: int) -> NGramState:
        if n <= 0:
            return state
        kept = state.recent.size(1) - (self.config.n - 1)  # tokens beyond one full context
        if n > min(kept, state.fed):
            raise ValueError(f"cannot rewind {n} tokens: this state remembers {min(kept, state.fed)} "
                             f"(ngram_lm.max_rewind={self.config.max_rewind})")
        state.recent, state.fed = state.recent[:, :-n], state.fed - n
        return state

    def reorder_state(self, state: NGramState, index: torch.Tensor) -> NGramState:
        return NGramState(state.recent.index_select(0, index), state.fed, state.bias.index_select(0, index))
