"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"): a convolutional prior over grids of tokens, in raster order.

Two stacks remove the blind spot of the original masked PixelCNN: a vertical stack sees every
row above (the full width), a horizontal stack sees the pixels to the left in the current row,
and the vertical stack feeds the horizontal one only after a one-row shift down. Masks are
implemented as cropped convolutions (a (k//2 + 1) x k kernel for the vertical stack, 1 x (k//2 + 1)
for the horizontal one) plus shifts: the first layer's horizontal input is shifted right by one
pixel (mask A: a pixel never sees itself), later layers see their own position (mask B). Gated
units tanh(W_f x) * sigmoid(W_g x), residual connections on the horizontal stack, skip
connections to a 1x1-conv head with a softmax over the vocabulary. Class conditioning adds a
learned per-class bias to every gate (the h in the paper's conditional form).

Decoding is cached as in Fast PixelCNN++ (Ramachandran et al. 2017): per layer, the vertical
stack's recent rows and the current row of the horizontal stack, so a new pixel costs one column
per layer (see `step`). Not here yet: RGB channel masking and the discretized logistic mixture
output of PixelCNN++.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from priors.base import Prior, PriorConfig, StepOutput
from tokenizers_ar.base import Layout


class PixelCNNConfig(PriorConfig):
    n_layer: int = Field(7, ge=1, description="gated layers")
    n_channels: int = Field(32, ge=1, description="channels of each stack")
    kernel_size: int = Field(5, ge=3, description="odd kernel width of the stacks")
    n_out: int = Field(64, ge=1, description="channels of the 1x1 output head")
    n_classes: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _odd_kernel(self) -> PixelCNNConfig:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        return self


def down(x: torch.Tensor) -> torch.Tensor:
    """Shift a (B, C, H, W) map one row down (row 0 becomes zeros)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right(x: torch.Tensor) -> torch.Tensor:
    """Shift a (B, C, H, W) map one column right (column 0 becomes zeros)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class GatedLayer(nn.Module):
    def __init__(self, c: PixelCNNConfig, first: bool):
        super().__init__()
        k, n = c.kernel_size, c.n_channels
        self.first = first
        # vertical: rows i - k//2 .. i, full width; horizontal: columns j - k//2 .. j
        self.v_conv = nn.Conv2d(n, 2 * n, (k // 2 + 1, k), padding=(k // 2, k // 2))
        self.h_conv = nn.Conv2d(n, 2 * n, (1, k // 2 + 1), padding=(0, k // 2))
        self.v_to_h = nn.Conv2d(2 * n, 2 * n, 1)
        self.h_out = nn.Conv2d(n, n, 1)
        self.skip = nn.Conv2d(n, n, 1)
        self.cond = nn.Embedding(c.n_classes, 4 * n) if c.n_classes else None

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None):
        H, W = v.shape[-2:]
        v_pre = self.v_conv(v)[:, :, :H]  # crop the bottom: row i sees rows <= i
        h_in = right(h) if self.first else h  # mask A: the first layer never sees its own pixel
        h_pre = self.h_conv(h_in)[:, :, :, :W] + self.v_to_h(down(v_pre))  # rows above only
        if self.cond is not None:
            bias_v, bias_h = self.cond(cond)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + bias_v, h_pre + bias_h
        v_out = torch.tanh(v_pre[:, ::2]) * torch.sigmoid(v_pre[:, 1::2])
        gated = torch.tanh(h_pre[:, ::2]) * torch.sigmoid(h_pre[:, 1::2])
        h_out = self.h_out(gated) + (0 if self.first else h)  # residual (not around mask A)
        return v_out, h_out, self.skip(gated)


@dataclass
class FastState:
    """Caches of fast generation (Ramachandran et al. 2017), per layer l:
    v[l]: the vertical stack's input, row by row (B, C, H, W): v[0] is the embedded image;
    vpre[l]: the vertical pre-activations of the last complete row (B, 2C, W), for the
    horizontal stack of the current row; h[l]: the horizontal input of the current row
    (B, C, W): h[0] is the embedded current row."""

    v: list[torch.Tensor]
    vpre: list[torch.Tensor]
    h: list[torch.Tensor]
    pos: int  # pixels written
    cond: torch.Tensor | None

class PixelCNN(Prior):
    name = "pixelcnn"
    Config = PixelCNNConfig
    layouts = frozenset({"grid"})

    def __init__(self, config: PixelCNNConfig, vocab_size: int, layout: Layout):
        super().__init__(config, vocab_size, layout)
        if len(layout.shape) != 2:
            raise ValueError("pixelcnn models (H, W) grids; colour channels are not supported yet")
        self.height, self.width = layout.shape
        n = config.n_channels
        self.embed = nn.Embedding(vocab_size, n)
        self.layers = nn.ModuleList(GatedLayer(config, first=i == 0) for i in range(config.n_layer))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(n, config.n_out, 1), nn.ReLU(),
                                  nn.Conv2d(config.n_out, vocab_size, 1))

    @classmethod
    def check_layout(cls, layout: Layout, config: PixelCNNConfig) -> list[str]:
        problems = super().check_layout(layout, config)
        if not problems and len(layout.shape) != 2:
            problems.append(f"pixelcnn models (H, W) grids, got {layout}; colour is not supported yet.")
        return problems

    def _grid_logits(self, grid: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.num_classes and cond is None:
            raise ValueError(f"this PixelCNN is class-conditional (n_classes={self.num_classes}): pass cond")
        return self._stacks(self.embed(grid).permute(0, 3, 1, 2), cond)  # (B, C, H, W) in

    def _stacks(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Embedded grid (B, C, H, W) -> logits (B, V, H, W)."""
        v, h, skips = x, x, 0
        for layer in self.layers:
            v, h, s = layer(v, h, cond)
            skips = skips + s
        return self.head(skips)  # (B, V, H, W)

    def forward(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B = ids.size(0)
        grid = ids.view(B, self.height, self.width)
        logits = self._grid_logits(grid, cond)
        return logits.permute(0, 2, 3, 1).reshape(B, self.height * self.width, -1)  # (B, T, V)

    # -- incremental decoding ------------------------------------------------------------------
    # Generating pixel (r, c) needs (a) the vertical stacks' row r - 1, computed once per row
    # from each layer's last k//2 + 1 rows, and (b) a k//2 + 1 wide window of each layer's
    # horizontal input in row r. Each new pixel then costs one column per layer instead of a
    # pass over the image.
    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        if self.num_classes and cond is None:
            raise ValueError(f"this PixelCNN is class-conditional (n_classes={self.num_classes}): pass cond")
        p = self.embed.weight
        C, L = self.config.n_channels, self.config.n_layer
        zeros = lambda *s: torch.zeros(batch_size, *s, dtype=p.dtype, device=p.device)  # noqa: E731
        state = FastState(v=[zeros(C, self.height, self.width) for _ in range(L)],
                          vpre=[zeros(2 * C, self.width) for _ in range(L)],  # row -1: zeros
                          h=[zeros(C, self.width) for _ in range(L + 1)], pos=0, cond=cond)
        return StepOutput(self._pixel_logits(state), state)

    def step(self, state: FastState, ids: torch.Tensor) -> StepOutput:
        T = self.height * self.width
        outs = []
        for t in range(ids.size(1)):
            r, c = divmod(state.pos, self.width)
            x = self.embed(ids[:, t])  # (B, C)
            state.v[0][:, :, r, c] = x
            state.h[0][:, :, c] = x
            state.pos += 1
            if state.pos == T:  # the image is complete: nothing left to predict
                outs.append(outs[-1] if outs else torch.zeros(ids.size(0), self.vocab_size,
                                                             device=ids.device))
                continue
            if state.pos % self.width == 0:  # row r is complete: advance the vertical stacks
                self._advance_rows(state, r)
                for h in state.h:
                    h.zero_()
            outs.append(self._pixel_logits(state))
        return StepOutput(torch.stack(outs, dim=1), state)

    def _advance_rows(self, state: FastState, r: int) -> None:
        """Vertical pre-activations of row r in every layer, and the next layer's input row."""
        k = self.config.kernel_size
        for i, layer in enumerate(self.layers):
            rows = state.v[i][:, :, max(0, r - k // 2) : r + 1]
            rows = F.pad(rows, (0, 0, k // 2 + 1 - rows.size(2), 0))  # rows above the image: 0
            pre = F.conv2d(rows, layer.v_conv.weight, layer.v_conv.bias, padding=(0, k // 2))[:, :, 0]
            state.vpre[i] = pre  # (B, 2C, W): fed to the horizontal stack before any class bias
            if i + 1 < len(self.layers):
                if layer.cond is not None:
                    pre = pre + layer.cond(state.cond)[:, : pre.size(1), None]
                state.v[i + 1][:, :, r] = torch.tanh(pre[:, ::2]) * torch.sigmoid(pre[:, 1::2])

    def _pixel_logits(self, state: FastState) -> torch.Tensor:
        """Logits (B, V) of the next pixel (r, c) = divmod(pos, W)."""
        k = self.config.kernel_size
        r, c = divmod(state.pos, self.width)
        skips = 0
        for i, layer in enumerate(self.layers):
            h = state.h[i]
            # the horizontal window: columns c - k//2 .. c (layer 0: shifted right by one)
            end = c if i == 0 else c + 1
            window = h[:, :, max(0, end - (k // 2 + 1)) : end]
            window = F.pad(window, (k // 2 + 1 - window.size(2), 0))[:, :, None]  # (B, C, 1, k//2+1)
            pre = F.conv2d(window, layer.h_conv.weight, layer.h_conv.bias)[:, :, 0, 0]  # (B, 2C)
            pre = pre + F.conv2d(state.vpre[i][:, :, c, None, None], layer.v_to_h.weight,
                                 layer.v_to_h.bias)[:, :, 0, 0]
            if layer.cond is not None:
                pre = pre + layer.cond(state.cond)[:, pre.size(1) :]
            gated = torch.tanh(pre[:, ::2]) * torch.sigmoid(pre[:, 1::2])
            out = F.conv2d(gated[:, :, None, None], layer.h_out.weight, layer.h_out.bias)[:, :, 0, 0]
            state.h[i + 1][:, :, c] = out + (0 if i == 0 else h[:, :, c])
            skips = skips + F.conv2d(gated[:, :, None, None], layer.skip.weight,
                                     layer.skip.bias)
        return self.head(skips)[:, :, 0, 0]  # (B, V)
