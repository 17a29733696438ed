"""GPT: a decoder-only transformer prior (Radford et al. 2018/2019), written the nanoGPT way.

Pre-norm blocks of causal self-attention (PyTorch's fused scaled_dot_product_attention) and an MLP,
learned absolute positions. The last layer outputs the head's parameters (priors/heads): V logits
for the default categorical head, tied to the token embedding as in GPT-2; for real-valued
layouts the input embedding is a linear map and a continuous head (a Gaussian mixture) models
each position.

Two choices differ from nanoGPT, both so that likelihoods are exact and sampling needs no seed text:
- A learned start embedding sits at position 0 and predicts the first token, so forward() scores
  every token of a sequence (input = [start, x_0 .. x_{T-2}], target = [x_0 .. x_{T-1}]).
- Class conditioning (`n_classes` > 0) adds a learned class embedding to that start embedding; every
  later position sees the class through attention.

Incremental decoding keeps a preallocated key/value cache per layer: the prompt goes through in
one parallel pass, then each step costs one position. Past `block_size`, the window slides: when
it is full, the cache is rebuilt from the start token and the newest (block_size - 1) // 2
tokens, so positions stay those seen in training and the rebuild is paid once every half window.
Slides happen at token counts fixed in advance, so the logits do not depend on how the tokens
were fed (one by one, a prompt at once, drafts in speculative decoding), and `rewind` can
restore exactly the window a shorter history implies.
priors/gpt_exact.py is the same network in integer arithmetic, for portable compression.
Not here: dropout on attention weights at inference, rotary positions, grouped-query attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from plugins.errors import DecodingError, LayoutError
from plugins.shared import Layout
from priors import packed
from priors.base import Prior, PriorConfig, StartToken, StepOutput, embedding
from priors.gpt_exact import GPTExactCoder


class GPTConfig(PriorConfig):
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=1)
    block_size: int = Field(256, ge=2, description="longest context, in tokens")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = False  # biases in Linear and LayerNorm layers (GPT-2 has them)
    n_classes: int = Field(0, ge=0, description="class labels to condition on; 0 = unconditional")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = _linear(x, self.c_attn).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            k, v, mask = cache.update(layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(_linear(y, self.c_proj))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(_linear(self.gelu(_linear(x, self.c_fc)), self.c_proj))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))

    def decode_one(self, x: torch.Tensor, kv: torch.Tensor, pos: int) -> torch.Tensor:
        """One new position per row, x (B, C), keys and values of this layer kv
        (2, B, nh, block_size, hs) filled up to `pos`: the same arithmetic as forward, written
        as few ops as it can be (no module calls, views instead of transposes, one copy of the
        new key and value into the cache, residuals added by the matrix products)."""
        a, m = self.attn, self.mlp
        B, C = x.shape
        nh = a.n_head
        h = F.layer_norm(x, (C,), self.ln_1.weight, self.ln_1.bias)
        qkv = _linear(h, a.c_attn).view(B, 3, nh, C // nh)
        kv[:, :, :, pos] = qkv[:, 1:].transpose(0, 1)  # keys and values in one copy
        # one query: two batched products and a softmax cost about half of the fused
        # attention kernel's fixed overhead on CPU at this size
        q = qkv[:, 0, :, None] * (C // nh) ** -0.5  # (B, nh, 1, hs)
        w = torch.matmul(q, kv[0, :, :, : pos + 1].transpose(-1, -2)).softmax(-1)
        y = torch.matmul(w, kv[1, :, :, : pos + 1])  # (B, nh, 1, hs)
        x = _linear_residual(x, y.view(B, C), a.c_proj)
        h = F.layer_norm(x, (C,), self.ln_2.weight, self.ln_2.bias)
        return _linear_residual(x, F.gelu(_linear(h, m.c_fc)), m.c_proj)


def _linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """layer(x). Outside training a plain nn.Linear skips the module call's overhead and, at a
    few rows, takes the product with packed weights (priors/packed.py); a quantized
    replacement (priors/quantize.py) is called as it is."""
    if type(layer) is nn.Linear and not torch.is_grad_enabled():
        return packed.linear(x, layer)
    return layer(x)


def _linear_residual(x: torch.Tensor, y: torch.Tensor, proj: nn.Module) -> torch.Tensor:
    """x + proj(y) for 2-d x, y: the residual is the matrix product's accumulator."""
    if type(proj) is not nn.Linear or packed.packs(y, proj):
        return _linear(y, proj).add_(x)
    out = torch.addmm(x, y, proj.weight.t())
    return out if proj.bias is None else out.add_(proj.bias)


@dataclass
class KVCache:
    """Preallocated keys and values of every layer, filled up to `pos` positions, written in
    place: decoding allocates no cache memory after init_state."""

    kv: torch.Tensor  # (n_layer, 2, B, nh, block_size, hs): keys [:, 0], values [:, 1]
    pos: int
    history: torch.Tensor  # (B, capacity[, D]) every value fed; the first `seen` are valid
    cond: torch.Tensor | None
    seen: int = 0  # tokens fed since the start
    # Speculative decoding rewinds across slides: once a rewind has had to rebuild a window,
    # every slide keeps the window it replaces (`spare`, starting at token `spare_start`), so
    # that a rewind into it swaps it back instead of recomputing it.
    keep_spare: bool = False
    spare: torch.Tensor | None = None
    spare_start: int | None = None

    def append(self, ids: torch.Tensor) -> None:
        end = self.seen + ids.size(1)
        if end > self.history.size(1):  # grow geometrically: appends stay O(1) amortised
            grown = self.history.new_zeros(self.history.size(0), max(end, 2 * self.history.size(1)),
                                           *self.history.shape[2:])
            grown[:, : self.seen] = self.history[:, : self.seen]
            self.history = grown
        self.history[:, self.seen : end] = ids
        self.seen = end

    def last(self, n: int) -> torch.Tensor:
        """The newest n tokens fed (B, n)."""
        return self.history[:, self.seen - n : self.seen]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        T = k.size(2)
        end = self.pos + T
        kv = self.kv[layer]
        kv[0, :, :, self.pos : end] = k
        kv[1, :, :, self.pos : end] = v
        mask = None
        if T > 1:  # new positions attend to all cached ones and causally among themselves
            mask = torch.ones(T, end, dtype=torch.bool, device=k.device).tril(diagonal=self.pos)
        return kv[0, :, :, :end], kv[1, :, :, :end], mask


class GPT(Prior):
    name = "gpt"
    Config = GPTConfig
    continuous_inputs = True
    exact_coder_class = GPTExactCoder  # portable compression: integer-exact pmfs

    def __init__(self, config: GPTConfig, vocab_size: int, layout: Layout):
        super().__init__(config, vocab_size, layout)
        self.wte = embedding(self.space, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.start = StartToken(config.n_embd, config.n_classes)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, self.n_params, bias=False)
        if self.distribution.name == "categorical":  # V logits: one row per token, as in wte
            self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)

        self.apply(self._init_weights)
        for pn, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if pn.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @classmethod
    def check_layout(cls, layout: Layout, config: GPTConfig) -> list[str]:
        problems = super().check_layout(layout, config)
        if layout.length is not None and layout.length > config.block_size:
            problems.append(
                f"the tokenizer makes {layout.length} tokens per example ({layout}) but "
                f"prior.block_size is {config.block_size}; set prior.block_size={layout.length} "
                "or more."
            )
        return problems

    @property
    def max_length(self) -> int:
        return self.config.block_size

    def _run(self, x: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        pos0 = cache.pos if cache is not None else 0
        pos = torch.arange(pos0, pos0 + x.size(1), device=x.device)
        x = self.drop(x + self.wpe(pos))
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += x.size(1)
        return _linear(self.ln_f(x), self.lm_head)  # (B, T, n_params)

    def forward(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B, T = ids.shape[:2]
        if self.config.block_size < T:
            raise LayoutError(
                f"sequence of {T} tokens is longer than block_size {self.config.block_size}"
            )
        x = torch.cat([self.start(B, cond), self.wte(ids[:, :-1])], dim=1)  # (B, T, C)
        return self._run(x, None)

    # -- incremental decoding ------------------------------------------------------------------
    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        c = self.config
        p = self.wte.weight
        shape = (c.n_layer, 2, batch_size, c.n_head, c.block_size, c.n_embd // c.n_head)
        cache = KVCache(
            kv=torch.empty(shape, dtype=p.dtype, device=p.device),
            pos=0,
            history=(torch.zeros(batch_size, c.block_size, self.space.size, device=p.device)
                     if self.space.continuous else
                     torch.zeros(batch_size, c.block_size, dtype=torch.long, device=p.device)),
            cond=cond,
        )
        logits = self._run(self.start(batch_size, cond), cache)
        return StepOutput(logits[:, -1], cache)

    def step(self, state: KVCache, ids: torch.Tensor) -> StepOutput:
        B = self.config.block_size
        if ids.size(1) == 1 and state.pos < B and not self.training:  # the decoding hot path
            return StepOutput(self._decode_one(state, ids)[:, None], state)
        outs, i, k = [], 0, ids.size(1)
        while i < k:
            if state.pos == B:  # the window is full: slide it before the next token
                if state.keep_spare:
                    if state.spare is None:
                        state.spare = torch.empty_like(state.kv)
                    state.spare_start = state.seen - (B - 1)
                    state.kv, state.spare = state.spare, state.kv
                self._refill(state, self._keep)
            take = min(B - state.pos, k - i)
            chunk = ids[:, i : i + take]
            outs.append(self._run(self.wte(chunk), state))
            state.append(chunk)
            i += take
        return StepOutput(torch.cat(outs, dim=1), state)

    def _decode_one(self, state: KVCache, ids: torch.Tensor) -> torch.Tensor:
        """One value per row, ids (B, 1), at a position inside the window -> params (B, P)."""
        pos = state.pos
        x = self.wte(ids[:, 0]) + self.wpe.weight[pos]  # (B, C)
        kv = state.kv
        for i, block in enumerate(self.h):
            x = block.decode_one(x, kv[i], pos)
        state.pos = pos + 1
        state.append(ids)
        return _linear(self.ln_f(x), self.lm_head)

    @property
    def _keep(self) -> int:
        """Tokens kept when the window slides."""
        return (self.config.block_size - 1) // 2

    def _window_start(self, seen: int) -> int:
        """Index of the oldest token in the window after `seen` tokens. A function of `seen`
        alone: slides happen at the same places whether tokens come one by one or in chunks."""
        B = self.config.block_size
        period = B - 1 - self._keep  # tokens between two slides
        return 0 if seen <= B - 1 else ((seen - B) // period + 1) * period

    def _refill(self, state: KVCache, keep: int) -> torch.Tensor:
        """Rebuild the cache from the start token and the newest `keep` tokens of the history."""
        state.pos = 0
        tokens = state.last(keep)
        x = torch.cat([self.start(tokens.size(0), state.cond), self.wte(tokens)], 1)
        return self._run(x, state)

    def reorder_state(self, state: KVCache, index: torch.Tensor) -> KVCache:
        state.kv = state.kv.index_select(2, index)
        state.spare = state.spare.index_select(2, index) if state.spare is not None else None
        state.history = state.history.index_select(0, index)
        state.cond = state.cond.index_select(0, index) if state.cond is not None else None
        return state

    @property
    def max_rewind(self) -> int:
        return self.config.block_size - 1

    def step_horizon(self, state: KVCache) -> int:
        """Tokens that fit before the window slides; when it is full, the next token slides
        it, and then those that fit in the new window."""
        B = self.config.block_size
        return B - state.pos if state.pos < B else B - 1 - self._keep

    def early_exit(self, n_layer: int) -> GPT:
        """The first `n_layer` blocks, then this model's final norm and output head: a draft
        for self-speculative decoding that shares every weight with this model."""
        if not 1 <= n_layer < self.config.n_layer:
            raise DecodingError(f"a self-speculative draft takes 1 to {self.config.n_layer - 1} "
                                f"of this GPT's {self.config.n_layer} layers, got {n_layer}.")
        with torch.device("meta"):  # every module is replaced by the target's own below
            draft = GPT(self.config.model_copy(update={"n_layer": n_layer}), self.vocab_size,
                        self.layout)
        for name in ("wte", "wpe", "start", "drop", "ln_f", "lm_head"):
            setattr(draft, name, getattr(self, name))
        draft.h = nn.ModuleList(list(self.h[:n_layer]))
        return draft.train(self.training)

    def rewind(self, state: KVCache, n: int) -> KVCache:
        if n <= 0:
            return state
        if n > self.max_rewind or n > state.seen:
            raise ValueError(f"cannot rewind {n} tokens (at most block_size - 1 = "
                             f"{self.max_rewind}, and only tokens this state has seen)")
        seen = state.seen - n
        current = state.seen - (state.pos - 1)
        state.seen = seen
        start = self._window_start(seen)
        if start == current:  # same window: later cache entries are simply overwritten
            state.pos = 1 + seen - start
        elif start == state.spare_start:  # back into the window the last slide replaced
            state.kv, state.spare = state.spare, state.kv
            state.spare_start, state.pos = None, 1 + seen - start
        else:  # a slide happened in the rewound part: rebuild the window `seen` tokens imply
            self._refill(state, seen - start)
            state.keep_spare, state.spare_start = True, None
        return state
