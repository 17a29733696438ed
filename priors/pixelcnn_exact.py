"""The Gated PixelCNN's coding step in integer arithmetic (priors/integer.py): the same pmfs on
every machine, for portable compression.

The network is priors/pixelcnn.py's (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders"), decoded in raster order with the caches of Fast PixelCNN++
(Ramachandran et al. 2017): per layer, the last rows of the vertical stack's input and the
current row of the horizontal stack's input, so a token costs one column per layer, and the
vertical stack runs once per row over the finished row. Every weight is quantized per output
row and every product is an exact integer matrix product in float64 (Jacob et al. 2018):

    vertical, once per row r:   v_pre = conv(v rows r - k//2 .. r)       (im2col, one product)
                                vh    = v_to_h(v_pre) + biases           (what row r + 1 reads)
                                v'    = tanh(f) sigmoid(g) of v_pre + class bias
    horizontal, per token:      pre   = h_conv(window of the row) + vh[column]
                                z     = tanh(f) sigmoid(g)               (tables, 2**-16 units)
                                h'    = h_out(z) + h                     (no residual at layer 0)
    output:                     ReLU, 1x1, ReLU, 1x1 of sum_l skip_l(z_l) -> the head's pmf

Colour channels keep the float prior's masks (applied before quantization): the next token is
channel c of the current pixel, whose column is recomputed with the channels written so far.
The gate's filter and gate halves of every colour group are reordered [all f | all g] at export.
The categorical head's pmf is the integer softmax; Bernoulli's one logit l gives the softmax of
(0, l), i.e. (1 - sigmoid(l), sigmoid(l)). A state codes one image: `max_block_length` is H W C.
Convolutions are written as explicit im2col products, never F.conv2d: a convolution kernel may
pick a Winograd or FFT algorithm, whose products are not exact.

Not here: the logistic-mixture head (its pmf needs differences of sigmoids at bin edges per
component: refused by `coded_head`), rewind and reorder (the coding loop needs neither), more
than one image per state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from plugins.errors import CompressionError
from priors.integer import ExactCoder, IntEmbedding, IntLinear, Table, coded_head, exp_table, mul_fixed

if TYPE_CHECKING:
    from priors.pixelcnn import PixelCNN

GATE_FRAC = 16  # fractional bits of the table outputs: tanh and sigmoid values


@dataclass
class PixelCNNCodingState:
    """hist[l]: the k//2 rows above the current one of layer l's vertical input (B, n, k//2, W);
    h[l]: layer l's horizontal input of the current row (B, k//2 + W, n), k//2 zero columns on
    the left (h[0] is the embedded row, which is also layer 0's vertical input row); vh[l]: what
    the rows above give the current row's horizontal pre-activations (B, W, 2n), biases in;
    cond_h[l], cond_v[l]: the class biases of layer l's horizontal and vertical gates (B, 2n),
    or None."""

    hist: list[torch.Tensor]
    h: list[torch.Tensor]
    vh: list[torch.Tensor]
    cond_h: list[torch.Tensor | None]
    cond_v: list[torch.Tensor | None]
    pos: int = 0  # tokens written


class PixelCNNExactCoder(ExactCoder):
    prior_name = "pixelcnn"

    def __init__(self, settings, modules):
        super().__init__(settings, modules)
        s = self.settings
        self.height, self.width, self.colours = s["height"], s["width"], s["colours"]
        self.n, self.kernels, self.frac = s["n_channels"], s["kernels"], s["frac"]
        self.clip = s["clip"]

    @property
    def max_block_length(self) -> int:
        return self.height * self.width * self.colours

    @classmethod
    def from_prior(cls, prior: PixelCNN, *, frac: int = 12, weight_bits: int = 12,
                   range_bits: int = 10) -> PixelCNNExactCoder:
        """Quantize `prior`: activations with `frac` fractional bits, |x| <= 2**range_bits."""
        head = coded_head(prior)
        c, n, C = prior.config, prior.config.n_channels, prior.colours
        clip = 2 ** (frac + range_bits)
        q = dict(bits=weight_bits, frac=frac, clip=clip)
        order = torch.arange(2 * n).view(C, 2, n // C)  # (group, f | g, unit)
        perm = torch.cat([order[:, 0].flatten(), order[:, 1].flatten()])  # [all f | all g]
        m = {"embed": IntEmbedding.quantize(prior.embed.weight, frac, clip)}
        for i, layer in enumerate(prior.layers):
            # the vertical kernel (2n, n, k//2 + 1, k) as rows over (n, rows, taps): im2col's order
            m[f"l{i}.v"] = IntLinear.quantize(layer.v_conv.weight[perm].flatten(1),
                                              layer.v_conv.bias[perm], **q)
            m[f"l{i}.vh"] = IntLinear.quantize(layer.v_to_h.weight[perm][:, perm, 0, 0],
                                               (layer.h_conv.bias + layer.v_to_h.bias)[perm], **q)
            # (2n, n, k//2 + 1) -> rows over (tap, channel): a window of the (B, W, n) row cache
            # is then a view, not a copy
            m[f"l{i}.h"] = IntLinear.quantize(
                layer.h_conv.masked_weight[perm, :, 0].transpose(1, 2).flatten(1), None, **q)
            if layer.cond is not None:  # [vertical | horizontal] class biases, each reordered
                m[f"l{i}.cond"] = IntEmbedding.quantize(
                    torch.cat([layer.cond.weight[:, perm], layer.cond.weight[:, 2 * n + perm]], 1),
                    frac, clip)
            if layer.h_out is not None:
                m[f"l{i}.out"] = IntLinear.quantize(layer.h_out.masked_weight[:, :, 0, 0],
                                                    layer.h_out.bias, **q)
        m["skip"] = IntLinear.quantize(  # every layer's skip at once: (n, L n)
            torch.cat([layer.skip.masked_weight[:, :, 0, 0] for layer in prior.layers], 1),
            sum(layer.skip.bias for layer in prior.layers), **q)
        convs = [mod for mod in prior.head if hasattr(mod, "masked_weight")]
        for j, conv in enumerate(convs):
            m[f"head{j}"] = IntLinear.quantize(conv.masked_weight[:, :, 0, 0], conv.bias, **q)
        m["tanh"] = Table.build("tanh", -7.0, 7.0, frac=frac, out_frac=GATE_FRAC)
        m["sigmoid"] = Table.build("sigmoid", -12.0, 12.0, frac=frac, out_frac=GATE_FRAC)
        m["exp_pmf"] = exp_table(24, frac=frac)
        settings = {"vocab_size": prior.vocab_size, "num_classes": c.n_classes, "head": head,
                    "height": prior.height, "width": prior.width, "colours": C,
                    "n_channels": n, "kernels": [layer.k for layer in prior.layers],
                    "n_head_layers": len(convs), "frac": frac, "weight_bits": weight_bits,
                    "clip": clip}
        return cls(settings, m)

    # -- coding ------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, cond: torch.Tensor | None = None):
        m, n, W = self.modules, self.n, self.width
        cond = self.class_ids(batch_size, cond)
        zeros = lambda *s: torch.zeros(batch_size, *s, dtype=torch.float64, device=self.device)  # noqa: E731
        state = PixelCNNCodingState(
            hist=[zeros(n, k // 2, W) for k in self.kernels],
            h=[zeros(k // 2 + W, n) for k in self.kernels], vh=[], cond_h=[], cond_v=[])
        for i in range(len(self.kernels)):
            bias = m[f"l{i}.cond"](cond).chunk(2, -1) if cond is not None else (None, None)
            state.cond_v.append(bias[0])
            state.cond_h.append(bias[1])
            # row 0 has nothing above: v_to_h of zeros is its bias, plus the class bias
            vh = m[f"l{i}.vh"](zeros(2 * n))
            state.vh.append((vh if bias[1] is None else vh + bias[1])[:, None].expand(-1, W, -1))
        return self._column(state, 0, 0), state

    def step(self, state: PixelCNNCodingState, ids: torch.Tensor):
        C, W, n = self.colours, self.width, self.n
        pos = state.pos
        if pos + 1 >= self.max_block_length:
            raise CompressionError(f"a pixelcnn coding state codes one image of "
                                   f"{self.max_block_length} tokens; start a new state per image")
        pixel, ch = divmod(pos, C)
        group = n // C
        x = self.modules["embed"](ids.to(self.device).view(-1) + ch * self.vocab_size)  # (B, n/C)
        state.h[0][:, self.kernels[0] // 2 + pixel % W, ch * group : (ch + 1) * group] = x
        state.pos = pos = pos + 1
        if pos % (W * C) == 0:  # the row is complete: its vertical stack, then a fresh row
            self._advance_row(state)
        pixel, ch = divmod(pos, C)
        return self._column(state, pixel % W, ch), state

    def _gate(self, pre: torch.Tensor) -> torch.Tensor:
        """tanh(f) * sigmoid(g) of pre (..., [f | g]) -> (..., n) in `frac` bits: exact, since
        the product of two table values is below 2**(2 GATE_FRAC + 1)."""
        f, g = pre.chunk(2, -1)
        return mul_fixed(self.modules["tanh"](f), self.modules["sigmoid"](g),
                         2 * GATE_FRAC - self.frac)

    def _advance_row(self, state: PixelCNNCodingState) -> None:
        """The vertical stack over the finished row in every layer: what the next row's
        horizontal stack reads (vh), and the next layer's input row."""
        m = self.modules
        row = state.h[0][:, self.kernels[0] // 2 :].transpose(1, 2)  # (B, n, W): the embedded row
        for i, k in enumerate(self.kernels):
            rows = torch.cat([state.hist[i], row[:, :, None]], 2)  # (B, n, k//2 + 1, W)
            state.hist[i] = rows[:, :, 1:]
            cols = F.pad(rows, (k // 2, k // 2)).unfold(3, k, 1)  # (B, n, k//2 + 1, W, k)
            pre = m[f"l{i}.v"](cols.permute(0, 3, 1, 2, 4).flatten(2))  # (B, W, 2n)
            vh = m[f"l{i}.vh"](pre)  # v_to_h reads the pre-activations before the class bias
            if state.cond_h[i] is not None:
                vh = vh + state.cond_h[i][:, None]
                pre = pre + state.cond_v[i][:, None]
            state.vh[i] = vh  # a sum of bounded terms: the gate tables clip what they read
            if i + 1 < len(self.kernels):
                row = self._gate(pre).transpose(1, 2)  # (B, n, W)
        for h in state.h:
            h.zero_()

    def _column(self, state: PixelCNNCodingState, c: int, ch: int) -> torch.Tensor:
        """The pmf (B, V) of channel ch at column c of the current row, from the horizontal
        inputs written so far (the masks hide later channels); writes the column's next-layer
        inputs on the way."""
        m, gated = self.modules, []
        for i, k in enumerate(self.kernels):
            h, kw = state.h[i], k // 2 + 1
            window = h[:, c : c + kw].flatten(1)  # (B, kw * n): (tap, channel) order, a view
            z = self._gate(m[f"l{i}.h"](window) + state.vh[i][:, c])  # (B, n)
            gated.append(z)
            if f"l{i}.out" in m:
                out = m[f"l{i}.out"](z)
                if i > 0:  # the residual skips layer 0: its input holds the pixel mask A hides
                    out = out.add_(h[:, kw - 1 + c]).clamp_(-self.clip, self.clip)
                state.h[i + 1][:, self.kernels[i + 1] // 2 + c] = out
        x = m["skip"](torch.cat(gated, -1))
        for j in range(self.settings["n_head_layers"]):  # ReLU, 1x1, ReLU, 1x1
            x = m[f"head{j}"](x.clamp_(min=0))
        P = x.size(-1) // self.colours
        return self.pmf(x[:, ch * P : (ch + 1) * P])
