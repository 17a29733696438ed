"""The GPT prior's coding step in integer arithmetic (priors/integer.py): the same pmfs on every
machine, for portable compression.

The network is priors/gpt.py's, position by position with a key/value cache: start (+ class)
vector or token embedding plus position embedding; per block, causal self-attention on the
LayerNorm of the residual stream, the output projection added to the residual, then the MLP
(GELU from a normal-cdf table) on its LayerNorm, added too; the output layer on the final
LayerNorm (tied to the token embedding as in the float model, quantized as its own copy) and the
integer softmax pmf.

Every linear layer is a `QLinear` (priors/qlinear.py): float32-exact products on per-row
quantized inputs, with the LayerNorm in front of it folded in. The residual stream keeps `frac`
fractional bits, |x| <= 2**(frac + range_bits), as float32 integers. Attention quantizes the
keys and values per row as they enter the cache, so its two batched products are float32-exact
too (`attention`; 1/sqrt(head size) is folded into the query rows); the cache is batch-major,
each row's positions side by side, which the batched products read fastest. c_fc writes its
outputs straight in the GELU table's grid units, so GELU is one lookup and one product; the
product is not floored, since mlp_proj quantizes its inputs anyway. On a trained char GPT the
files are 0.08% larger than the float path's (BENCHMARKS.md).

Coder format 2. Format 1 (float64 products on 22-bit activations, priors/gpt_exact_v1.py) is
slower; `from_saved` still loads it, so files written with it decode.

A state codes any number of tokens: init_state's pmf predicts the first from the start vector
at position 0, each step one more, and past `block_size` the window slides as the float GPT's
does (priors/gpt.py): when it is full, the cache is rebuilt from the start vector and the newest
(block_size - 1) // 2 tokens, fed one position at a time (their pmfs unused), so a slide costs
that many steps once every half window. Blocks of at most block_size tokens never slide.

Not here: prompts of several tokens per step (the pipelines code one token per step; a slide's
rebuild could run as one parallel pass), continuous (real-valued) inputs, dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from plugins.errors import CompressionError
from priors.gpt_exact_v1 import GPTExactCoderV1
from priors.integer import (
    ExactCoder,
    IntEmbedding,
    Table,
    coded_head,
    exp_table,
)
from priors.qlinear import QLinear, ieee_float32, lookup, quantize_rows

if TYPE_CHECKING:
    from priors.gpt import GPT


@dataclass
class GPTExactState:
    # keys and values quantized per row (quantize_rows): float32 integers (n_layer, B * nh,
    # block_size, hs), and their row scales (n_layer, B * nh, block_size)
    k: torch.Tensor
    k_scale: torch.Tensor
    v: torch.Tensor
    v_scale: torch.Tensor
    pos: int  # positions filled (the next one to compute)
    cond: torch.Tensor | None  # class labels (B,), for the start vector of a slide
    recent: list[torch.Tensor] = field(default_factory=list)  # the newest tokens fed, (B,) each


def attention(q: torch.Tensor, k: torch.Tensor, k_scale: torch.Tensor, v: torch.Tensor,
              v_scale: torch.Tensor, exp: Table, bits: dict[str, int], frac: int) -> torch.Tensor:
    """softmax(q k^T) v for q (BH, hs) in `frac` bits (1/sqrt(hs) folded in) over the cached
    keys and values (BH, T, hs) and their scales (BH, T): (BH, hs) float32 in `frac` bits.

    Scores: q is quantized per row to bits["qk"] like the keys, so q.k is a float32-exact
    product; scaled, they are floored on the exp table's grid, and the weights w come from the
    table (2**16 at the maximum). The weighted mean sum_t w_t v_t / sum_t w_t: each v_t is
    q_t * s_t / 2**kv, so the products w_t s_t, quantized as one row to bits["u"], weigh the
    integer q_t in a float32-exact product. The mean is not floored: attn_proj quantizes it."""
    kq, ku, kv = bits["qk"], bits["u"], bits["v"]
    qq, q_scale = quantize_rows(q, kq)
    acc = torch.bmm(qq[:, None], k.transpose(1, 2))[:, 0]  # (BH, T), |acc| <= 2**24: exact
    grid = exp.spec["table_frac"]
    s = acc.mul_(q_scale).mul_(k_scale).mul_(2.0 ** (grid - 2 * (frac + kq))).floor_()
    w = lookup(exp.values32, (s.amax(-1, keepdim=True) - s).clamp_(max=exp.last))
    w_sum = w.sum(-1, keepdim=True, dtype=torch.float64)
    u = w.mul_(v_scale)  # w_t s_t > 0
    u_max = u.amax(-1, keepdim=True)
    uq = u.mul_(u_max.reciprocal().mul_(2.0**ku)).add_(0.5).floor_()  # (BH, T) in [0, 2**ku]
    acc = torch.bmm(uq[:, None], v)[:, 0]  # (BH, hs): exact
    return acc.mul_((u_max.double() * 2.0 ** -(ku + kv) / w_sum).float())


class GPTExactCoder(ExactCoder):
    prior_name = "gpt"
    format_version = 2

    def __init__(self, settings, modules):
        super().__init__(settings, modules)
        s = self.settings
        self.n_layer, self.n_head, self.n_embd = s["n_layer"], s["n_head"], s["n_embd"]
        self.block_size, self.frac, self.clip = s["block_size"], s["frac"], s["clip"]
        self.attention_bits = s.get("attention_bits")

    @property
    def default_block_length(self) -> int:
        """One window: blocks that never slide, so a batch holds many (fast); longer blocks
        (`--block-length 2048`) give every token more context (fewer bits) at slides' cost."""
        return self.block_size

    @property
    def keep(self) -> int:
        """Tokens kept when the window slides (the float GPT's choice)."""
        return (self.block_size - 1) // 2

    def state_bytes_per_block(self) -> int:
        """The float32 key/value cache and its row scales."""
        return 2 * 4 * self.n_layer * self.block_size * (self.n_embd + self.n_head)

    @classmethod
    def from_prior(cls, prior: GPT, *, frac: int = 12, range_bits: int = 10) -> GPTExactCoder:
        """Quantize `prior`. The residual stream: `frac` fractional bits, |x| <= 2**range_bits."""
        head = coded_head(prior)
        c = prior.config
        hs = c.n_embd // c.n_head
        clip = 2 ** (frac + range_bits)
        # float32-exact attention products: hs * 2**(2 qk) and block_size * 2**(u + v) <= 2**24
        qk = (24 - math.ceil(math.log2(max(hs, 2)))) // 2
        uv = 24 - math.ceil(math.log2(max(c.block_size, 2)))
        if min(qk, uv // 2) < 6:
            raise CompressionError(f"a gpt with head size {hs} and block_size {c.block_size} "
                                   "leaves under 6 bits for float32-exact attention; portable "
                                   "coding covers head sizes and contexts up to 4096")
        bits = {"qk": qk, "u": uv - uv // 2, "v": uv // 2}
        gelu_cdf = Table.build("normal_cdf", -5.0, 5.0, frac=frac)  # 2**16 Phi: 0 / 1 beyond
        grid = gelu_cdf.spec["table_frac"]
        q = dict(frac=frac, clip=clip)
        emb = lambda w: IntEmbedding.quantize(w, frac, clip)  # noqa: E731
        m = {"wte": emb(prior.wte.weight), "wpe": emb(prior.wpe.weight),
             "start": emb(prior.start.start[None])}
        if c.n_classes:
            m["class_emb"] = emb(prior.start.class_emb.weight)
        # the queries' rows carry 1/sqrt(hs): the scores need no scaling of their own
        qkv_gain = torch.ones(3 * c.n_embd, dtype=torch.float64)
        qkv_gain[: c.n_embd] = 1 / math.sqrt(hs)
        for i, block in enumerate(prior.h):
            a, mlp = block.attn, block.mlp
            m[f"h{i}.c_attn"] = QLinear.quantize(a.c_attn.weight, a.c_attn.bias, gain=qkv_gain,
                                                 norm=block.ln_1, **q)
            m[f"h{i}.attn_proj"] = QLinear.quantize(a.c_proj.weight, a.c_proj.bias, **q)
            m[f"h{i}.c_fc"] = QLinear.quantize(mlp.c_fc.weight, mlp.c_fc.bias, norm=block.ln_2,
                                               out_frac=grid, **q)
            m[f"h{i}.mlp_proj"] = QLinear.quantize(mlp.c_proj.weight, mlp.c_proj.bias,
                                                   in_frac=grid + gelu_cdf.spec["out_frac"], **q)
        m["lm_head"] = QLinear.quantize(prior.lm_head.weight, None, norm=prior.ln_f, **q)
        m["exp_attn"] = exp_table(16, frac=frac)
        m["exp_pmf"] = exp_table(24, frac=frac)
        m["gelu_cdf"] = gelu_cdf
        settings = {"vocab_size": prior.vocab_size, "num_classes": c.n_classes, "head": head,
                    "n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
                    "block_size": c.block_size, "frac": frac, "clip": clip,
                    "attention_bits": bits}
        return cls(settings, m)

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                   device: torch.device | str = "cpu") -> ExactCoder:
        if config.get("format_version") == 1:  # a file compressed before format 2
            return GPTExactCoderV1.from_saved(config, tensors, device)
        return super().from_saved(config, tensors, device)

    def init_state(self, batch_size: int, cond: torch.Tensor | None = None):
        shape = (self.n_layer, batch_size * self.n_head, self.block_size,
                 self.n_embd // self.n_head)
        new = lambda *size: torch.empty(size, dtype=torch.float32, device=self.device)  # noqa: E731
        # never read beyond `pos`: no need to clear them
        state = GPTExactState(new(*shape), new(*shape[:3]), new(*shape), new(*shape[:3]), 0,
                              self.class_ids(batch_size, cond))
        return self._position(self._start(batch_size, state.cond), state), state

    def step(self, state: GPTExactState, ids: torch.Tensor):
        ids = ids.to(self.device).view(-1)
        if state.pos == self.block_size:  # the window is full: slide it first
            state.pos = 0
            self._position(self._start(ids.numel(), state.cond), state)
            for kept in state.recent[-self.keep :]:
                self._position(self.modules["wte"](kept), state)
        state.recent = [*state.recent[-self.keep :], ids]
        return self._position(self.modules["wte"](ids), state), state

    def _start(self, batch_size: int, cond: torch.Tensor | None) -> torch.Tensor:
        """The start vector (+ the class embedding) (B, C): what position 0 sees."""
        x = self.modules["start"](0).expand(batch_size, -1)
        return x if cond is None else x + self.modules["class_emb"](cond)

    def _position(self, x: torch.Tensor, state: GPTExactState) -> torch.Tensor:
        """Embedding x (B, C) at position state.pos -> pmf (B, V) of the next token."""
        with ieee_float32():
            return self._layers(x, state)

    def _layers(self, x: torch.Tensor, state: GPTExactState) -> torch.Tensor:
        m, pos, clip = self.modules, state.pos, self.clip
        B, C = x.shape
        nh, bits = self.n_head, self.attention_bits
        cdf = m["gelu_cdf"]
        phi, lo, last = cdf.values32, cdf.spec["lo"], cdf.last
        x = (x + m["wpe"](pos)).clamp_(-clip, clip).float()  # float32 integers (|x| < 2**24)
        for i in range(self.n_layer):
            qkv = m[f"h{i}.c_attn"](x, rounded=False).view(B, 3, nh, C // nh)
            for cache, scale, part, k in ((state.k, state.k_scale, 1, bits["qk"]),
                                          (state.v, state.v_scale, 2, bits["v"])):
                rows, row_scale = quantize_rows(qkv[:, part].reshape(B * nh, -1), k)
                cache[i, :, pos], scale[i, :, pos] = rows, row_scale[:, 0]
            t = pos + 1
            y = attention(qkv[:, 0].reshape(B * nh, -1), state.k[i, :, :t],
                          state.k_scale[i, :, :t], state.v[i, :, :t], state.v_scale[i, :, :t],
                          m["exp_attn"], bits, self.frac)
            x = x.add_(m[f"h{i}.attn_proj"](y.view(B, C))).clamp_(-clip, clip)
            h = m[f"h{i}.c_fc"](x, rounded=False)  # in the table's grid units
            # the nearest grid point (int() truncates: a floor at >= 0); GELU(h) = h Phi(h)
            g = h * lookup(phi, (h - (lo - 0.5)).clamp_(0, last))
            x = x.add_(m[f"h{i}.mlp_proj"](g)).clamp_(-clip, clip)
        state.pos = pos + 1
        return self.pmf(m["lm_head"](x).double())
