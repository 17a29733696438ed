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

Decoding: `step` keeps a canvas of the tokens so far and recomputes only the rows that can
change (a causal convolution's rows <= r depend only on input rows <= r). Not here yet: the
cached generation of Fast PixelCNN++ (Ramachandran et al. 2017), RGB channel masking, and the
discretized logistic mixture output of PixelCNN++.
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
class CanvasState:
    canvas: torch.Tensor  # (B, H, W) tokens so far (zeros elsewhere)
    pos: int  # tokens written
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
    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        device = self.embed.weight.device
        state = CanvasState(torch.zeros(batch_size, self.height, self.width, dtype=torch.long,
                                        device=device), 0, cond)
        return StepOutput(self._next_logits(state, 1)[:, 0], state)

    def step(self, state: CanvasState, ids: torch.Tensor) -> StepOutput:
        B, k = ids.shape
        flat = state.canvas.view(B, -1)
        flat[:, state.pos : state.pos + k] = ids
        state.pos += k
        return StepOutput(self._next_logits(state, k), state)

    def _next_logits(self, state: CanvasState, k: int) -> torch.Tensor:
        """Logits for the k positions after the last k written (the first after the start)."""
        T = self.height * self.width
        first = state.pos - k + 1 if state.pos else 0  # positions whose logits are wanted
        last = min(state.pos, T - 1) if state.pos else 0
        rows = last // self.width + 1  # causal: rows < `rows` need only input rows < `rows`
        logits = self._grid_logits(state.canvas[:, :rows], state.cond)  # (B, V, rows, W)
        flat = logits.permute(0, 2, 3, 1).reshape(state.canvas.size(0), rows * self.width, -1)
        out = flat[:, first : last + 1]
        if out.size(1) < k:  # past the last pixel: nothing left to predict, pad for the API
            out = torch.cat([out, out[:, -1:].expand(-1, k - out.size(1), -1)], dim=1)
        return out
