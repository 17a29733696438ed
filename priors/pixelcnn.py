"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"): a convolutional prior over grids of tokens, in raster order.

Two stacks remove the blind spot of the original masked PixelCNN: a vertical stack sees every
row above (the full width), a horizontal stack sees the pixels to the left in the current row,
and the vertical stack feeds the horizontal one only after a one-row shift down. The spatial
masks are cropped convolutions: a (k//2 + 1) x k kernel for the vertical stack, 1 x (k//2 + 1)
for the horizontal one, whose last tap is the current pixel. (Padding each input once and
reading the shifted rows as views instead saves the crop and shift copies but measured 11%
slower per training step on one AVX2 thread: BENCHMARKS.md, issue 16.) The first layer uses a larger
kernel (7 in the paper) so the receptive field covers digits and garments after a few layers.

Colour (an (H, W, C) layout, channels innermost in the token order) uses the channel masks of
PixelCNN: every feature map is split into C groups, group c predicts channel c, and at the
current pixel group c may read the input channels before c (mask A, first layer) and the feature
groups up to c (mask B, later layers). Grayscale is C = 1, where mask A hides the pixel itself.

Gated units tanh(W_f x) * sigmoid(W_g x), residual connections on the horizontal stack, skip
connections to a 1x1-conv output that gives each subpixel the head's parameters: a softmax over
the vocabulary (the categorical head), the discretized logistic mixture of PixelCNN++
(`head: logistic_mixture`), or one Bernoulli logit for binary images. Class conditioning adds a
learned per-class bias to every gate (the h of the paper's conditional form).

Decoding is cached as in Fast PixelCNN++ (Ramachandran et al. 2017): per layer, the vertical
stack's rows so far and the current row of the horizontal stack, so a new token costs one column
per layer instead of a pass over the image (see `step`), written as a few matrix products per
layer with the masks applied once per run (`StepWeights`); k tokens of one row go through in one
pass over their columns. `rewind` steps back up to one row (the previous row's horizontal caches
are kept), so a PixelCNN takes part in speculative decoding, as target or as draft.
priors/pixelcnn_exact.py is the same network in integer arithmetic, for portable compression.
Not here: the multi-scale or parallel generation of later work (e.g. Reed et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from plugins.registry import Registry
from plugins.shared import Layout
from priors.base import Prior, PriorConfig, StepOutput
from priors.pixelcnn_exact import PixelCNNExactCoder


class PixelCNNConfig(PriorConfig):
    n_layer: int = Field(7, ge=1, description="gated layers")
    n_channels: int = Field(32, ge=1, description="channels per stack, a multiple of the colour channels")
    kernel_size: int = Field(3, ge=3, description="odd kernel width of the stacks after the first layer")
    first_kernel_size: int = Field(7, ge=3, description="odd kernel width of the first layer")
    n_out: int = Field(64, ge=1, description="channels of the 1x1 output head (per colour channel)")
    n_classes: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _old_output_keys(cls, data: Any) -> Any:
        """Runs saved before heads existed said `output: softmax | logistic_mixture` and
        `n_mixtures: K`; read them as the head they meant."""
        if isinstance(data, dict) and ("output" in data or "n_mixtures" in data):
            data = dict(data)
            output, k = data.pop("output", "softmax"), data.pop("n_mixtures", 5)
            if output == "logistic_mixture":
                data.setdefault("head", {"name": "logistic_mixture", "n_mixtures": k})
            elif output != "softmax":
                raise ValueError(f"output must be softmax or logistic_mixture, got {output!r}; "
                                 "pick the head with prior.head instead")
        return data

    @model_validator(mode="after")
    def _odd_kernels(self) -> PixelCNNConfig:
        for key in ("kernel_size", "first_kernel_size"):
            if getattr(self, key) % 2 == 0:
                raise ValueError(f"{key} must be odd, got {getattr(self, key)}")
        return self


def down(x: torch.Tensor) -> torch.Tensor:
    """Shift a (B, C, H, W) map one row down (row 0 becomes zeros)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def channel_mask(out_ch: int, in_ch: int, groups: int, mask: str) -> torch.Tensor:
    """(out_ch, in_ch) connectivity between colour groups at one pixel: group c of the output
    reads the input groups before c (mask "A") or up to c (mask "B")."""
    g_out = torch.arange(out_ch) // (out_ch // groups)
    g_in = torch.arange(in_ch) // (in_ch // groups)
    allowed = g_in[None, :] < g_out[:, None] if mask == "A" else g_in[None, :] <= g_out[:, None]
    return allowed.float()


class MaskedConv(nn.Conv2d):
    """A Conv2d whose current-pixel tap (the last column, last row of the kernel) only connects
    colour groups that `channel_mask` allows. Other taps see earlier pixels: all channels."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], groups: int, mask: str,
                 padding: tuple[int, int] = (0, 0)):
        super().__init__(in_ch, out_ch, kernel, padding=padding)
        full = torch.ones(out_ch, in_ch, *kernel)
        full[:, :, -1, -1] = channel_mask(out_ch, in_ch, groups, mask)
        self.register_buffer("mask", full, persistent=False)
        self.trivial = bool(full.all())  # grayscale mask B: nothing to hide

    @property
    def masked_weight(self) -> torch.Tensor:
        return self.weight if self.trivial else self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight, self.bias)


def gate(pre: torch.Tensor, groups: int) -> torch.Tensor:
    """tanh(f) * sigmoid(g) with pre = [f | g] inside each colour group: (B, 2n, ...) -> (B, n, ...)."""
    shape = pre.shape
    pre = pre.reshape(shape[0], groups, 2, shape[1] // (2 * groups), *shape[2:])
    gated = torch.tanh(pre[:, :, 0]) * torch.sigmoid(pre[:, :, 1])
    return gated.reshape(shape[0], shape[1] // 2, *shape[2:])


class GatedLayer(nn.Module):
    def __init__(self, c: PixelCNNConfig, groups: int, first: bool, last: bool):
        super().__init__()
        k = c.first_kernel_size if first else c.kernel_size
        n, self.k, self.groups, self.first = c.n_channels, k, groups, first
        # vertical: rows i - k//2 .. i, full width; horizontal: columns j - k//2 .. j
        self.v_conv = nn.Conv2d(n, 2 * n, (k // 2 + 1, k), padding=(k // 2, k // 2))
        self.h_conv = MaskedConv(n, 2 * n, (1, k // 2 + 1), groups, "A" if first else "B",
                                 padding=(0, k // 2))
        self.v_to_h = nn.Conv2d(2 * n, 2 * n, 1)  # rows above: every channel
        # the last layer's horizontal output would feed nothing: only its skip is used
        self.h_out = None if last else MaskedConv(n, n, (1, 1), groups, "B")
        self.skip = MaskedConv(n, n, (1, 1), groups, "B")
        self.cond = nn.Embedding(c.n_classes, 4 * n) if c.n_classes else None

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None):
        H, W = v.shape[-2:]
        v_pre = self.v_conv(v)[:, :, :H]  # crop the bottom: row i sees rows <= i
        h_pre = self.h_conv(h)[:, :, :, :W] + self.v_to_h(down(v_pre))  # v: rows above only
        if self.cond is not None:
            bias_v, bias_h = self.cond(cond)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + bias_v, h_pre + bias_h
        gated = gate(h_pre, self.groups)
        # the residual skips the first layer: its input holds the pixel that mask A hides
        h_out = None if self.h_out is None else self.h_out(gated) + (0 if self.first else h)
        return gate(v_pre, self.groups), h_out, self.skip(gated)


@dataclass
class StepWeights:
    """Per layer, the weights of one column of the horizontal stack as matrices, masks applied
    and the gate's outputs reordered [f of every colour group | g of every group] so that
    tanh(f) * sigmoid(g) is two ops (`tanh_` on the first half, `glu`); made once per
    decoding run."""

    h_conv: list[torch.Tensor]  # (B, n * kw, 2n): the window's taps, expanded over the batch
    v_to_h: list[tuple[torch.Tensor, torch.Tensor]]  # (2n, 2n), (B, 2n): + every bias of h
    h_out: list[tuple[torch.Tensor, torch.Tensor] | None]  # (n, n), (n,)
    skip: tuple[torch.Tensor, torch.Tensor]  # every layer's skip at once: (n, L * n), (n,)
    head: list[tuple[torch.Tensor, torch.Tensor]]  # the two 1x1 convolutions of the head


@dataclass
class FastState:
    """Caches of fast generation (Ramachandran et al. 2017), per layer l:
    v[l]: the vertical stack's input, row by row (B, n, H, W): v[0] is the embedded image;
    vh[l]: what the rows above give the horizontal stack of the current row (B, W, 2n), biases
    included; h[l]: the horizontal input of the current row (B, pad + W, n), `pad` zero columns
    on the left: h[0] is the embedded current row. `spare`, `prev_vh`: the previous row's h and
    vh, kept so that `rewind` can step back into it."""

    v: list[torch.Tensor]
    vh: list[torch.Tensor]
    h: list[torch.Tensor]
    pos: int  # tokens written
    cond: torch.Tensor | None
    weights: StepWeights
    row: int = 0  # the row h and vh belong to
    spare: list[torch.Tensor] | None = None
    prev_vh: list[torch.Tensor] | None = None


class PixelCNN(Prior):
    name = "pixelcnn"
    Config = PixelCNNConfig
    layouts = frozenset({"grid"})
    raster_only = True  # the masked convolutions see the rows above and the pixels to the left
    exact_coder_class = PixelCNNExactCoder  # portable compression: integer-exact pmfs

    def __init__(self, config: PixelCNNConfig, vocab_size: int, layout: Layout,
                 heads: Registry | None = None):
        super().__init__(config, vocab_size, layout, heads)
        problems = self._shape_problems(layout, config)
        if problems:
            raise ValueError(" ".join(problems))
        self.height, self.width = layout.shape[:2]
        self.colours = layout.shape[2] if len(layout.shape) == 3 else 1
        n, C = config.n_channels, self.colours
        # each colour channel has its own embedding, into its own group of n / C features
        self.embed = nn.Embedding(C * vocab_size, n // C)
        L = config.n_layer
        self.layers = nn.ModuleList(GatedLayer(config, C, first=i == 0, last=i == L - 1) for i in range(L))
        self.head = nn.Sequential(nn.ReLU(), MaskedConv(n, C * config.n_out, (1, 1), C, "B"), nn.ReLU(),
                                  MaskedConv(C * config.n_out, C * self.n_params, (1, 1), C, "B"))

    @staticmethod
    def _shape_problems(layout: Layout, config: PixelCNNConfig) -> list[str]:
        if len(layout.shape) not in (2, 3):
            return [f"pixelcnn models (H, W) or (H, W, C) grids, got {layout}."]
        colours = layout.shape[2] if len(layout.shape) == 3 else 1
        if config.n_channels % colours:
            return [f"pixelcnn n_channels ({config.n_channels}) must be a multiple of the {colours} "
                    f"colour channels of {layout}: each channel gets an equal group of features."]
        return []

    @classmethod
    def check_layout(cls, layout: Layout, config: PixelCNNConfig) -> list[str]:
        return super().check_layout(layout, config) or cls._shape_problems(layout, config)

    # -- teacher forcing -----------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Tokens (..., C) -> features (..., n): channel c's embedding fills feature group c."""
        offsets = torch.arange(self.colours, device=ids.device) * self.vocab_size
        return self.embed(ids + offsets).flatten(-2)

    def _check_cond(self, cond: torch.Tensor | None) -> None:
        if self.num_classes and cond is None:
            raise ValueError(f"this PixelCNN is class-conditional (n_classes={self.num_classes}): pass cond")

    def _params(self, out: torch.Tensor) -> torch.Tensor:
        """Output (B, C * P, ...) -> per-channel head parameters (B, ..., C, P)."""
        return out.unflatten(1, (self.colours, -1)).movedim((1, 2), (-2, -1))

    def forward(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Head params (B, T, P) of every subpixel, in raster order."""
        self._check_cond(cond)
        B = ids.size(0)
        x = self._embed(ids.view(B, self.height, self.width, self.colours)).permute(0, 3, 1, 2)
        return self._params(self._stacks(x, cond)).reshape(B, ids.size(1), -1)  # (B, T, P)

    def _stacks(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Embedded image (B, n, H, W) -> head output (B, C * P, H, W)."""
        v, h, skips = x, x, 0
        for layer in self.layers:
            v, h, s = layer(v, h, cond)
            skips = skips + s
        return self.head(skips)

    # -- incremental decoding ------------------------------------------------------------------
    # Generating the token at pixel (r, c) needs (a) the vertical stacks' row r - 1, computed once
    # per row from each layer's last k//2 + 1 rows, and (b) a k//2 + 1 wide window of each
    # layer's horizontal input in row r, whose last column holds the channels written so far of
    # the current pixel (the masks hide the rest). Each token then costs one column per layer;
    # k tokens of one row cost one pass over their columns (what speculative decoding checks).
    @property
    def _pad(self) -> int:
        return max(layer.k for layer in self.layers) // 2

    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        self._check_cond(cond)
        p = self.embed.weight
        n, L, W = self.config.n_channels, self.config.n_layer, self.width
        zeros = lambda *s: torch.zeros(batch_size, *s, dtype=p.dtype, device=p.device)  # noqa: E731
        weights = self._step_weights(batch_size, cond)
        state = FastState(v=[zeros(n, self.height, W) for _ in range(L)],
                          vh=[b[:, None].expand(-1, W, -1) for _, b in weights.v_to_h],  # row -1: 0
                          h=[zeros(self._pad + W, n) for _ in range(L)], pos=0, cond=cond,
                          weights=weights, spare=[zeros(self._pad + W, n) for _ in range(L)])
        return StepOutput(self._columns(state, 0, 0)[:, 0, 0], state)

    def _step_weights(self, batch_size: int, cond: torch.Tensor | None) -> StepWeights:
        n, G = self.config.n_channels, self.colours
        half = n // G
        order = torch.arange(2 * n).view(G, 2, half)
        perm = torch.cat([order[:, 0].flatten(), order[:, 1].flatten()])  # [f of groups | g]
        h_conv, v_to_h, h_out = [], [], []
        for layer in self.layers:
            w = layer.h_conv.masked_weight[perm, :, 0]  # (2n, n, kw)
            kw = w.size(-1)
            w = F.pad(w, (self._pad + 1 - kw, 0)).flatten(1).t()  # (n * (pad + 1), 2n)
            h_conv.append(w.expand(batch_size, -1, -1))
            bias = layer.h_conv.bias + layer.v_to_h.bias
            if layer.cond is not None:
                bias = bias + layer.cond(cond)[:, 2 * n :]
            v_to_h.append((layer.v_to_h.weight[perm, :, 0, 0],
                           bias[..., perm].expand(batch_size, -1)))
            h_out.append(None if layer.h_out is None else
                         (layer.h_out.masked_weight[:, :, 0, 0], layer.h_out.bias))
        skip = (torch.cat([layer.skip.masked_weight[:, :, 0, 0] for layer in self.layers], 1),
                sum(layer.skip.bias for layer in self.layers))
        head = [(m.masked_weight[:, :, 0, 0], m.bias) for m in self.head if isinstance(m, MaskedConv)]
        return StepWeights(h_conv, v_to_h, h_out, skip, head)

    def step(self, state: FastState, ids: torch.Tensor) -> StepOutput:
        C, WC = self.colours, self.width * self.colours
        T = self.height * WC
        outs, i, k = [], 0, ids.size(1)
        while i < k:
            p0 = state.pos
            take = min(k - i, WC - p0 % WC)  # the tokens left in this row
            for t in range(take):
                self._write(state, ids[:, i + t], p0 + t)
            state.pos = p1 = p0 + take
            i += take
            last = min(p1, (p0 // WC + 1) * WC - 1)  # the last next position inside this row
            if p0 + 1 <= last:  # params of positions p0 + 1 .. last: one pass over their columns
                c_a = ((p0 + 1) // C) % self.width
                cols = self._columns(state, c_a, (last // C) % self.width)  # (B, ncols, C, P)
                q = torch.arange(p0 + 1, last + 1, device=cols.device)
                outs.append(cols[:, (q // C) % self.width - c_a, q % C])
            if p1 % WC == 0:  # the row is complete
                if p1 == T:  # the image is complete: nothing left to predict
                    outs.append(outs[-1][:, -1:] if outs else torch.zeros(
                        ids.size(0), 1, self.n_params, dtype=self.embed.weight.dtype, device=ids.device))
                else:
                    self._advance_rows(state, p1 // WC - 1)
                    outs.append(self._columns(state, 0, 0)[:, :, 0])
        return StepOutput(torch.cat(outs, dim=1), state)

    def _write(self, state: FastState, token: torch.Tensor, pos: int) -> None:
        """Embed token (B,) at position pos into the vertical and horizontal inputs."""
        group = self.config.n_channels // self.colours
        pixel, ch = divmod(pos, self.colours)
        r, c = divmod(pixel, self.width)
        x = self.embed(token + ch * self.vocab_size)  # (B, n / C): feature group ch
        state.v[0][:, ch * group : (ch + 1) * group, r, c] = x
        state.h[0][:, self._pad + c, ch * group : (ch + 1) * group] = x

    def _advance_rows(self, state: FastState, r: int) -> None:
        """Vertical pre-activations of row r in every layer, what they give the horizontal
        stack of row r + 1, and the next layer's input row; the finished row's horizontal
        caches are kept for rewind."""
        vh = []
        for i, layer in enumerate(self.layers):
            k = layer.k
            rows = state.v[i][:, :, max(0, r - k // 2) : r + 1]
            rows = F.pad(rows, (0, 0, k // 2 + 1 - rows.size(2), 0))  # rows above the image: 0
            pre = F.conv2d(rows, layer.v_conv.weight, layer.v_conv.bias, padding=(0, k // 2))[:, :, 0]
            w, b = state.weights.v_to_h[i]
            vh.append(torch.baddbmm(b[:, None], pre.transpose(1, 2), w.t().expand(pre.size(0), -1, -1)))
            if i + 1 < len(self.layers):
                if layer.cond is not None:
                    pre = pre + layer.cond(state.cond)[:, : pre.size(1), None]
                state.v[i + 1][:, :, r] = gate(pre, self.colours)
        state.prev_vh, state.vh = state.vh, vh
        state.spare, state.h = state.h, state.spare
        for h in state.h:
            h.zero_()
        state.row = r + 1

    def _columns(self, state: FastState, c_a: int, c_b: int) -> torch.Tensor:
        """Head params (B, ncols, C, P) of every channel of the current row's pixels c_a .. c_b,
        from the horizontal inputs written so far (later channels of a pixel are masked)."""
        w, n, pad = state.weights, self.config.n_channels, self._pad
        gated = []
        for i in range(len(self.layers)):
            h = state.h[i]
            window = h[:, c_a : c_b + pad + 1].unfold(1, pad + 1, 1)  # (B, ncols, n, pad + 1)
            pre = torch.baddbmm(state.vh[i][:, c_a : c_b + 1], window.flatten(2), w.h_conv[i])
            pre[..., :n].tanh_()
            z = F.glu(pre, dim=-1)  # tanh(f) * sigmoid(g): (B, ncols, n)
            gated.append(z)
            if w.h_out[i] is not None:
                out = F.linear(z, *w.h_out[i])
                # the residual skips the first layer: its input holds the pixel mask A hides
                state.h[i + 1][:, pad + c_a : pad + c_b + 1] = out if i == 0 else \
                    out.add_(h[:, pad + c_a : pad + c_b + 1])
        x = F.linear(torch.cat(gated, -1), *w.skip)
        for weight, bias in w.head:  # ReLU, 1x1, ReLU, 1x1 as matrix products
            x = F.linear(F.relu(x), weight, bias)
        return x.unflatten(-1, (self.colours, -1))  # (B, ncols, C, P)

    @property
    def max_rewind(self) -> int:
        return self.width * self.colours

    def rewind(self, state: FastState, n: int) -> FastState:
        # Within a row, later columns are rewritten before anything reads them; one row back,
        # the previous row's horizontal caches come back (the vertical ones are recomputed
        # when the row completes again).
        if n <= 0:
            return state
        pos = state.pos - n
        row = pos // (self.width * self.colours)
        if pos < 0 or row < state.row - 1 or (row < state.row and state.prev_vh is None):
            raise ValueError(f"cannot rewind {n} tokens: a pixelcnn state steps back at most "
                             f"into the previous row (max_rewind={self.max_rewind})")
        if row < state.row:
            state.h, state.spare = state.spare, state.h
            state.vh, state.prev_vh = state.prev_vh, None
            state.row = row
        state.pos = pos
        return state
