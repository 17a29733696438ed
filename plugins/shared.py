"""The vocabulary both stages share: what one example looks like (Layout), what values a position
holds (ValueSpace), and how a saved component's config.json is written and read.

It sits below tokenizers_ar (stage 1) and priors (stage 2), next to the errors, so that neither
stage imports the other: a tokenizer says what it produces in these terms, a prior says what it
accepts in the same terms, and the pipeline checks that the two fit.

    Layout.seq()               a 1-D sequence of token ids, any length (text, mu-law audio)
    Layout.grid(28, 28)        a fixed 28x28 grid of token ids, modelled in raster order
    Layout.seq(dims=1)         a sequence of real numbers, one per position (a raw waveform)
    Layout.grid(1, 13, dims=1) a fixed vector of 13 real numbers (a row of a feature table)

Not here: anything about how values are produced (tokenizers) or modelled (priors, heads).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.errors import CheckpointError

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ValueSpace:
    """What one position holds: one of `size` discrete values (token ids 0..size-1), or a vector
    of `size` real numbers. Heads (output distributions) say which spaces they can model."""

    continuous: bool
    size: int

    @classmethod
    def discrete(cls, values: int) -> ValueSpace:
        return cls(False, int(values))

    @classmethod
    def real(cls, dims: int) -> ValueSpace:
        return cls(True, int(dims))

    def __str__(self) -> str:
        return f"{self.size} real value(s)" if self.continuous else f"{self.size} discrete values"


@dataclass(frozen=True)
class Layout:
    """What one encoded example looks like.

    kind "seq": a 1-D sequence of any length (text, audio).
    kind "grid": a fixed (H, W) or (H, W, C) array, modelled in raster order (row by row,
    channels innermost), i.e. as a flat sequence of `length` positions.
    dims: 0 when positions hold token ids (a discrete space of the tokenizer's vocab_size
    values), D > 0 when each position holds D real numbers (a continuous space). Continuous
    examples are float tensors shaped (T, D) for seq and (*shape, D) for grids.
    """

    kind: str
    shape: tuple[int, ...] = ()
    dims: int = 0

    @classmethod
    def seq(cls, dims: int = 0) -> Layout:
        return cls("seq", (), int(dims))

    @classmethod
    def grid(cls, *shape: int, dims: int = 0) -> Layout:
        if len(shape) not in (2, 3) or any(int(s) < 1 for s in shape):
            raise ValueError(f"a grid layout needs (H, W) or (H, W, C) positive sizes, got {shape}")
        return cls("grid", tuple(int(s) for s in shape), int(dims))

    @property
    def continuous(self) -> bool:
        return self.dims > 0

    @property
    def length(self) -> int | None:
        """Positions per example for grids; None for sequences (any length)."""
        return math.prod(self.shape) if self.kind == "grid" else None

    def space(self, vocab_size: int) -> ValueSpace:
        """The value space of one position, given the tokenizer's vocabulary size."""
        return ValueSpace.real(self.dims) if self.continuous else ValueSpace.discrete(vocab_size)

    def to_json(self) -> list[Any] | dict[str, Any]:
        if not self.continuous:  # the form every earlier version wrote
            return [self.kind, *self.shape]
        return {"kind": self.kind, "shape": list(self.shape), "dims": self.dims}

    @classmethod
    def from_json(cls, value: Sequence[Any] | dict[str, Any]) -> Layout:
        if isinstance(value, dict):
            return cls(str(value["kind"]), tuple(int(v) for v in value.get("shape", ())),
                       int(value.get("dims", 0)))
        return cls(str(value[0]), tuple(int(v) for v in value[1:]))

    def __str__(self) -> str:
        text = "seq" if self.kind == "seq" else "grid " + "x".join(map(str, self.shape))
        return f"{text} of {self.dims}-d reals" if self.continuous else text


def write_config(directory: Path, payload: dict[str, Any]) -> None:
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_config(directory: Path, kind: str, format_version: int) -> dict[str, Any]:
    """The config.json of a saved tokenizer or prior, with every failure a clear error."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no saved {kind} in {directory}: {CONFIG_FILE} is missing. Pass the folder that "
            f"{kind}.save() wrote (in a run directory: RUN_DIR/{kind})."
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}).") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} should hold a JSON object, found {type(payload).__name__}.")
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path} is corrupt: format_version should be an integer, found "
                              f"{version!r}.")
    if version > format_version:
        raise CheckpointError(
            f"{directory} was saved by a newer tokar ({kind} format {version}, "
            f"this version reads up to {format_version}); upgrade tokar to load it."
        )
    return payload
