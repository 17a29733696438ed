"""Orderings: which position of an example the prior predicts first, second, ...

The chain rule holds in any order, p(x) = prod_i p(x_pi(i) | x_pi(<i)); "different orders lead to
distributions of different levels of complexity". A recipe picks one in its own section,

    order: {name: snake}            # raster (default), reverse, snake, column, random, hilbert, zorder
    order: {name: random, seed: 3}

and the pipeline applies it between tokenizer and prior: `Ordering.wrap(tokenizer)` is the
tokenizer as the prior sees it, whose `encode` permutes the positions of each encoded example and
whose `decode` puts them back. Training data, validation, `Pipeline.score` (and everything built
on it), `Pipeline.encode` and sampling go through it, so the prior only ever sees the permuted
sequence and samples come back in data order.

Orders of an H x W grid, over pixels (the C channels of a pixel stay together, in their order):
- raster: row by row, left to right (the identity); reverse: the raster order backwards;
- snake: raster, every other row right to left (boustrophedon);
- column: column by column, top to bottom;
- random: a fixed permutation drawn from `seed`;
- hilbert: the generalized Hilbert curve of Cervený (2018, "gilbert"), defined for any W x H,
  every step to a neighbouring pixel on even sides;
- zorder: Morton order, the pixels sorted by their interleaved row and column bits.

Not here: orders of sequences (streams have no fixed length to permute; only raster applies),
orders learned from data. Priors whose own structure assumes raster order (PixelCNN's masked
convolutions) say so (`Prior.raster_only`) and a recipe pairing them with another order is an
error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from plugins.shared import Layout

ORDERS = ("raster", "reverse", "snake", "column", "random", "hilbert", "zorder")


class OrderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["raster", "reverse", "snake", "column", "random", "hilbert", "zorder"] = "raster"
    seed: int = Field(0, description="seed of the random order")


def order_problems(config: OrderConfig, layout_kind: str | None, prior_cls: type | None) -> list[str]:
    """What stops an order from applying to a tokenizer's layout and a prior (empty if nothing)."""
    if config.name == "raster":
        return []
    problems = []
    if layout_kind is not None and layout_kind != "grid":
        problems.append(f"order: '{config.name}' permutes the positions of fixed-size examples (grid "
                        f"layouts), but the tokenizer produces {layout_kind} layouts; only raster "
                        "applies to sequences.")
    if prior_cls is not None and getattr(prior_cls, "raster_only", False):
        problems.append(f"order: prior '{prior_cls.name}' assumes raster order (its masks see the "
                        f"positions above and to the left), so it cannot model order '{config.name}'; "
                        "use order: {name: raster}, or a prior that takes any order (gpt, lstm, "
                        "made, nade, fvsbn).")
    return problems


# -- pixel orders ----------------------------------------------------------------------------------
def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _gilbert(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> Iterator[tuple[int, int]]:
    """Cells of the rectangle at (x, y) spanned by the major axis (ax, ay) and the minor axis
    (bx, by), along the generalized Hilbert curve: split into up / across / down parts, halving
    sides to even lengths where possible so every step stays between neighbours."""
    w, h = abs(ax + ay), abs(bx + by)
    dax, day, dbx, dby = _sign(ax), _sign(ay), _sign(bx), _sign(by)
    if h == 1 or w == 1:  # a single row or column: walk it
        dx, dy, n = (dax, day, w) if h == 1 else (dbx, dby, h)
        for i in range(n):
            yield x + i * dx, y + i * dy
        return
    ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
    if 2 * w > 3 * h:  # long and thin: two halves along the major axis
        if abs(ax2 + ay2) % 2 and w > 2:
            ax2, ay2 = ax2 + dax, ay2 + day
        yield from _gilbert(x, y, ax2, ay2, bx, by)
        yield from _gilbert(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
        return
    if abs(bx2 + by2) % 2 and h > 2:
        bx2, by2 = bx2 + dbx, by2 + dby
    yield from _gilbert(x, y, bx2, by2, ax2, ay2)
    yield from _gilbert(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
    yield from _gilbert(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby),
                        -bx2, -by2, -(ax - ax2), -(ay - ay2))


def hilbert_cells(height: int, width: int) -> list[tuple[int, int]]:
    """(row, col) of every cell of a height x width grid along the generalized Hilbert curve."""
    cells = (_gilbert(0, 0, width, 0, 0, height) if width >= height
             else _gilbert(0, 0, 0, height, width, 0))
    return [(y, x) for x, y in cells]


def _morton(r: int, c: int) -> int:
    code = 0
    for bit in range(16):
        code |= ((c >> bit) & 1) << (2 * bit) | ((r >> bit) & 1) << (2 * bit + 1)
    return code


def pixel_order(name: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Raster indices (r * width + c) of the pixels, in the order `name` visits them."""
    grid = np.arange(height * width).reshape(height, width)
    if name == "raster":
        return grid.reshape(-1)
    if name == "reverse":
        return grid.reshape(-1)[::-1].copy()
    if name == "snake":
        rows = [row if r % 2 == 0 else row[::-1] for r, row in enumerate(grid)]
        return np.concatenate(rows)
    if name == "column":
        return grid.T.reshape(-1).copy()
    if name == "random":
        return np.random.default_rng(seed).permutation(height * width)
    if name == "hilbert":
        return np.array([r * width + c for r, c in hilbert_cells(height, width)])
    if name == "zorder":
        return np.array(sorted(range(height * width), key=lambda i: _morton(*divmod(i, width))))
    raise ValueError(f"unknown order {name!r}; choose one of {', '.join(ORDERS)}")


# -- applying an order ---------------------------------------------------------------------------
class Ordering:
    """The permutation of one layout's positions: the prior's position i holds the example's
    position `perm[i]`."""

    def __init__(self, config: OrderConfig, layout: Layout):
        self.config, self.layout = config, layout
        problems = order_problems(config, layout.kind, None)
        if problems:
            raise ValueError(" ".join(problems))
        if config.name == "raster":
            self.perm = None
            return
        height, width = layout.shape[:2]
        channels = int(np.prod(layout.shape[2:], dtype=np.int64)) if len(layout.shape) > 2 else 1
        pixels = pixel_order(config.name, height, width, config.seed)
        perm = (pixels[:, None] * channels + np.arange(channels)).reshape(-1)
        self.perm = torch.from_numpy(perm).long()
        self.inverse = torch.argsort(self.perm)

    @property
    def identity(self) -> bool:
        return self.perm is None

    def _apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """Reorder the positions of one example x, any shape holding `layout.length` positions
        (each of `layout.dims` reals for continuous layouts); the shape is kept."""
        if index is None:
            return x
        flat = x.reshape(self.layout.length, -1) if self.layout.continuous else x.reshape(-1)
        return flat[index.to(flat.device)].reshape(x.shape)

    def permute(self, x: torch.Tensor) -> torch.Tensor:
        """An encoded example in data order -> the prior's order."""
        return self._apply(x, self.perm)

    def unpermute(self, x: torch.Tensor) -> torch.Tensor:
        """An example in the prior's order (a sample) -> data order."""
        return self._apply(x, None if self.perm is None else self.inverse)

    def wrap(self, tokenizer: Any) -> Any:
        """The tokenizer as the prior sees it (itself for raster order)."""
        return tokenizer if self.identity else OrderedTokenizer(tokenizer, self)

    def __repr__(self) -> str:
        return f"Ordering({self.config.name}, seed={self.config.seed}, {self.layout})"


class OrderedTokenizer:
    """A tokenizer whose encoded examples come in an ordering's order: `encode` permutes,
    `decode` un-permutes, everything else is the tokenizer's own. Its fingerprint names the
    order, so cached tokenized data of different orders never mix."""

    def __init__(self, tokenizer: Any, ordering: Ordering):
        self.tokenizer, self.ordering = tokenizer, ordering

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.tokenizer, name)
        if name == "to_array":  # image tokenizers' ids -> integer array, like decode
            return lambda ids: attr(self.ordering.unpermute(torch.as_tensor(ids)))
        return attr

    def encode(self, example: Any) -> torch.Tensor:
        return self.ordering.permute(self.tokenizer.encode(example))

    def encode_batch(self, examples: Iterable[Any]) -> list[torch.Tensor]:
        return [self.ordering.permute(x) for x in self.tokenizer.encode_batch(examples)]

    def decode(self, ids: torch.Tensor) -> Any:
        return self.tokenizer.decode(self.ordering.unpermute(torch.as_tensor(ids)))

    def decode_batch(self, batch: Iterable[torch.Tensor]) -> list[Any]:
        return self.tokenizer.decode_batch([self.ordering.unpermute(torch.as_tensor(x)) for x in batch])

    def fingerprint(self) -> str:
        c = self.ordering.config
        return f"{self.tokenizer.fingerprint()}|order={c.name}:{c.seed}"

    def __repr__(self) -> str:
        return f"{self.tokenizer!r} in {self.ordering!r}"
