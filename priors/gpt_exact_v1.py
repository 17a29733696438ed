"""The GPT's first integer coding step (coder format 1), kept unchanged so that files compressed
with it still decode: priors/gpt_exact.py (format 2, float32-exact products) replaced it for new
files, and `GPTExactCoder.from_saved` hands format-1 codecs to this class.

The network is priors/gpt.py's, position by position with a key/value cache: start (+ class)
vector or token embedding plus position embedding; per block, LayerNorm, causal self-attention
(1/sqrt(head size) folded into the query rows' multipliers, softmax weights from an exp table),
the output projection added to the residual, LayerNorm, MLP with a table GELU; final LayerNorm,
the output layer (tied to the token embedding as in the float model, quantized as its own
copy) and the integer softmax pmf. Every activation has `frac` fractional bits and is clipped to
|x| <= 2**range_bits, weights have `weight_bits` per output row (see `from_prior` for the bounds).

One state codes at most `block_size` tokens (`max_block_length`): init_state's pmf predicts the
first from the start vector at position 0, and each of block_size - 1 steps one more. The float
GPT slides its window past that; the exact coder refuses a further step, and a caller codes long
inputs in blocks, each from a fresh state (each block pays for a cold context once).

Not here: the sliding window, prompts of several tokens per step (the pipelines code one token
per step), continuous (real-valued) inputs, dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from plugins.errors import CompressionError
from priors.integer import (
    EXACT,
    ExactCoder,
    IntEmbedding,
    IntLayerNorm,
    IntLinear,
    Table,
    attention,
    check_bound,
    coded_head,
    exp_table,
    gelu,
)

if TYPE_CHECKING:
    from priors.gpt import GPT


@dataclass
class GPTExactState:
    kv: torch.Tensor  # (n_layer, 2, B, nh, block_size, hs) float64 integers: keys [:, 0], values [:, 1]
    pos: int  # positions filled (the next one to compute)


class GPTExactCoderV1(ExactCoder):
    prior_name = "gpt"
    format_version = 1

    def __init__(self, settings, modules):
        super().__init__(settings, modules)
        s = self.settings
        self.n_layer, self.n_head, self.n_embd = s["n_layer"], s["n_head"], s["n_embd"]
        self.block_size, self.frac, self.clip = s["block_size"], s["frac"], s["clip"]

    @property
    def max_block_length(self) -> int:
        return self.block_size

    @classmethod
    def from_prior(cls, prior: GPT, *, frac: int = 12, weight_bits: int = 12,
                   range_bits: int = 10) -> GPTExactCoderV1:
        """Quantize `prior`. Activations: `frac` fractional bits, |x| <= 2**range_bits (clip);
        the bounds below keep every sum of products under 2**53."""
        head = coded_head(prior)
        c = prior.config
        hs = c.n_embd // c.n_head
        clip = 2 ** (frac + range_bits)
        attn_out = 16  # bits of the attention weights
        check_bound(hs * clip * clip, EXACT, "attention scores")
        check_bound(c.block_size * 2**attn_out * clip, EXACT, "attention weighted sum")
        q = dict(bits=weight_bits, frac=frac, clip=clip)
        emb = lambda w: IntEmbedding.quantize(w, frac, clip)  # noqa: E731
        norm = lambda ln: IntLayerNorm.quantize(ln.weight, ln.bias, ln.eps, size=c.n_embd,  # noqa: E731
                                                frac=frac, clip=clip)
        m = {"wte": emb(prior.wte.weight), "wpe": emb(prior.wpe.weight),
             "start": emb(prior.start.start[None])}
        if c.n_classes:
            m["class_emb"] = emb(prior.start.class_emb.weight)
        # the queries' rows carry 1/sqrt(hs): the scores need no scaling of their own
        qkv_gain = torch.ones(3 * c.n_embd, dtype=torch.float64)
        qkv_gain[: c.n_embd] = 1 / math.sqrt(hs)
        for i, block in enumerate(prior.h):
            a, mlp = block.attn, block.mlp
            m[f"h{i}.ln_1"] = norm(block.ln_1)
            m[f"h{i}.c_attn"] = IntLinear.quantize(a.c_attn.weight, a.c_attn.bias, gain=qkv_gain, **q)
            m[f"h{i}.attn_proj"] = IntLinear.quantize(a.c_proj.weight, a.c_proj.bias, **q)
            m[f"h{i}.ln_2"] = norm(block.ln_2)
            m[f"h{i}.c_fc"] = IntLinear.quantize(mlp.c_fc.weight, mlp.c_fc.bias, **q)
            m[f"h{i}.mlp_proj"] = IntLinear.quantize(mlp.c_proj.weight, mlp.c_proj.bias, **q)
        m["ln_f"] = norm(prior.ln_f)
        m["lm_head"] = IntLinear.quantize(prior.lm_head.weight, None, **q)
        m["exp_attn"] = exp_table(attn_out, frac=frac)
        m["exp_pmf"] = exp_table(24, frac=frac)
        m["gelu_cdf"] = Table.build("normal_cdf", -5.0, 5.0, frac=frac)  # 2**16 Phi: 0 / 1 beyond
        settings = {"vocab_size": prior.vocab_size, "num_classes": c.n_classes, "head": head,
                    "n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
                    "block_size": c.block_size, "frac": frac, "weight_bits": weight_bits,
                    "clip": clip}
        return cls(settings, m)

    def init_state(self, batch_size: int, cond: torch.Tensor | None = None):
        m = self.modules
        shape = (self.n_layer, 2, batch_size, self.n_head, self.block_size,
                 self.n_embd // self.n_head)
        # never read beyond `pos`: no need to clear it
        state = GPTExactState(torch.empty(shape, dtype=torch.float64, device=self.device), 0)
        x = m["start"](0).expand(batch_size, -1)  # (B, C)
        cond = self.class_ids(batch_size, cond)
        if cond is not None:
            x = x + m["class_emb"](cond)
        return self._position(x, state), state

    def step(self, state: GPTExactState, ids: torch.Tensor):
        if state.pos >= self.block_size:
            raise CompressionError(f"the exact gpt coder codes at most {self.block_size} tokens "
                                   "per state (max_block_length): start a new block with "
                                   "init_state")
        x = self.modules["wte"](ids.to(self.device).view(-1))  # (B, C)
        return self._position(x, state), state

    def _position(self, x: torch.Tensor, state: GPTExactState) -> torch.Tensor:
        """Embedding x (B, C) at position state.pos -> pmf (B, V) of the next token."""
        m, pos, clip, frac = self.modules, state.pos, self.clip, self.frac
        B, C = x.shape
        nh = self.n_head
        x = (x + m["wpe"](pos)).clamp_(-clip, clip)
        for i in range(self.n_layer):
            qkv = m[f"h{i}.c_attn"](m[f"h{i}.ln_1"](x)).view(B, 3, nh, C // nh)
            kv = state.kv[i]
            kv[:, :, :, pos] = qkv[:, 1:].transpose(0, 1)  # keys and values in one copy
            y = attention(qkv[:, 0, :, None], kv[0, :, :, : pos + 1], kv[1, :, :, : pos + 1],
                          m["exp_attn"], frac)  # (B, nh, 1, hs)
            x = x.add_(m[f"h{i}.attn_proj"](y.view(B, C))).clamp_(-clip, clip)
            h = gelu(m[f"h{i}.c_fc"](m[f"h{i}.ln_2"](x)), m["gelu_cdf"])
            x = x.add_(m[f"h{i}.mlp_proj"](h)).clamp_(-clip, clip)
        state.pos = pos + 1
        return self.pmf(m["lm_head"](m["ln_f"](x)))
