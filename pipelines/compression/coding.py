"""Arithmetic coding of token streams under a prior: the coding loop that `tokar compress` and
`tokar decompress` share.

A model with an exact likelihood is a compressor (Shannon 1948; Witten, Neal & Cleary 1987;
MacKay 2003, ch. 6; Deletang et al. 2024, "Language Modeling Is Compression"): coding x_t with
p(x_t | x_<t) costs -log2 p(x_t | x_<t) bits, so a file costs its log-loss plus a few bytes. The
entropy coder is constriction's range coder (Bamler 2022), a queue (first in, first out), with a
`Categorical(perfect=False)` model family fed one probability table per coded symbol.

The algorithm, identical on both sides:
- The streams are cut into blocks; blocks are coded B at a time as one batch, each batch into its
  own range-coder stream (so batches are independent: the container's block table).
- For one batch: a *stepper* gives the integer pmfs (2**16 in total, every value >= 1):
  `init_state(b, cond)` the pmf of position 0 of every block; then for t = 0, 1, ...: the pmfs
  of the blocks still running are handed to the coder, which encodes their tokens t (encoder) or
  decodes them (decoder); then ONE batched `step` feeds column t of every block (blocks already
  finished are fed id 0, on both sides) and gives the pmfs of position t + 1.
- Two sources of pmfs, one loop: `FloatStepper` (the prior's float forward and its head's
  `quantized_pmf`) and an `ExactCoder` (priors/integer.py: the prior in integer arithmetic).

Why it decodes exactly: the decoder computes the very same pmfs as the encoder because it runs
the very same code on the very same inputs: incremental steps (never a teacher-forced pass on one
side and steps on the other), the same batch composition, a fixed torch thread count inside
coding (restored after). An `ExactCoder` computes its pmfs with integer-valued float64 reductions
and stored lookup tables, so they are the same on every machine, CPU kernel set and device (the
portable path, `tokar compress`'s default). The float path depends on float kernels (a matrix
product's rounding may depend on its batch size, BLAS, AVX2 against AVX-512): it decodes on the
same kind of machine only. A one-ulp difference anywhere would break decoding silently; the
container's CRC32 of the original data turns that into a clear error instead
(pipelines/compression/container.py).

Decoding costs one batched step per position for all the blocks of a batch: O(T) steps at cached
speed, not O(T^2) re-runs of the prefix (the failure of DeepMind's reference implementation, whose
fast parallel encoder also disagrees with its decoder on floating-point probabilities).

Not here: the container format, and turning data into token streams (pipelines/compression/container.py);
determinism of the float path across CPU kinds or between CPU and GPU (use the portable path);
coding continuous heads (they have no pmf).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from plugins.errors import CompressionError
from priors.base import Prior
from priors.heads.base import PMF_PRECISION
from priors.likelihood import nll

PRECISION = PMF_PRECISION  # bits of the integer pmfs: every value gets at least 1 / 2**16


@dataclass(frozen=True)
class Block:
    """A run of `length` tokens of item `item`, starting at token `start`; `cond` is the item's
    class label (conditional priors) or None."""

    item: int
    start: int
    length: int
    cond: int | None = None


def plan_blocks(lengths: list[int], block_length: int | None,
                conds: list[int | None] | None = None) -> list[Block]:
    """Each item's tokens cut into blocks of `block_length` (the last one shorter); None keeps
    every item whole. Empty items have no blocks. A pure function of its arguments: the decoder
    rebuilds the same table from the container's header."""
    conds = conds or [None] * len(lengths)
    blocks = []
    for item, (n, cond) in enumerate(zip(lengths, conds, strict=True)):
        step = n if block_length is None else block_length
        blocks += [Block(item, s, min(step, n - s), cond) for s in range(0, n, max(step, 1))]
    return blocks


def batches(blocks: list[Block], batch_size: int) -> list[list[Block]]:
    return [blocks[i : i + batch_size] for i in range(0, len(blocks), batch_size)]


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` inside, restored after: a reduction split over
    a different number of threads may round differently."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@dataclass
class CodingStats:
    """What coding cost against what the model predicts: `model_nats` sums the model's own
    -log p of the coded tokens (the float cross-entropy, priors/likelihood.py `nll`), `pmf_bits`
    the ideal code length of the integer pmfs the coder used; the coded stream's size is within
    a few bytes of the latter."""

    tokens: int = 0
    model_nats: float = 0.0
    pmf_bits: float = 0.0

    @property
    def model_bits(self) -> float:
        return self.model_nats / math.log(2)


class Stepper(Protocol):
    """A source of integer pmfs for the coding loop: `init_state(B, cond)` gives the pmf (B, V)
    int64 of position 0 (2**16 in total, every value >= 1) and a state; `step(state, ids (B,))`
    feeds one token per row and gives the next pmf. `FloatStepper` wraps a prior and its head;
    an `ExactCoder` (priors/integer.py) is one as it is."""

    vocab_size: int
    num_classes: int
    device: torch.device

    def init_state(self, batch_size: int, cond: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, Any]: ...

    def step(self, state: Any, ids: torch.Tensor) -> tuple[torch.Tensor, Any]: ...


class FloatStepper:
    """A prior's own float forward and its head's `quantized_pmf`: exact on the machine (and the
    kind of CPU kernels) that compressed, not across them. It also gives the head's float
    -log p of coded tokens (`CodingStats.model_nats`)."""

    def __init__(self, prior: Prior):
        self.prior = prior
        self.vocab_size = prior.vocab_size
        self.num_classes = prior.num_classes
        self.device = next(prior.parameters()).device
        self.params: torch.Tensor | None = None  # of the position the last pmf is for

    def _pmf(self, params: torch.Tensor) -> torch.Tensor:
        self.params = params
        return self.prior.distribution.quantized_pmf(params, PRECISION)

    def init_state(self, batch_size: int, cond: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, Any]:
        params, state = self.prior.init_state(batch_size, cond)
        return self._pmf(params), state

    def step(self, state: Any, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        params, state = self.prior.step(state, ids[:, None])
        return self._pmf(params[:, 0]), state

    def model_nats(self, rows: np.ndarray, coded: np.ndarray) -> float:
        params = self.params[torch.from_numpy(rows).to(self.device)]
        return float(nll(self.prior, params, torch.from_numpy(coded).to(self.device)).double().sum())


# code(active rows, probabilities (a, V) float64, tokens (a,) or None) -> tokens (a,) int64
CodeFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


@torch.inference_mode()
def code_batch(stepper: Stepper, batch: list[Block], tokens: np.ndarray | None, code: CodeFn,
               stats: CodingStats | None = None,
               on_step: Callable[[int], None] | None = None) -> np.ndarray:
    """Run the coding loop over one batch of blocks: `tokens` (b, L) when encoding (zero padded
    past each block's length), None when decoding. Returns the (b, L) tokens either way.
    `on_step(n)` after each position, n the tokens it coded (a progress bar's tick)."""
    lengths = np.array([blk.length for blk in batch])
    b, L = len(batch), int(lengths.max())
    out = np.zeros((b, L), dtype=np.int64)
    device = stepper.device
    cond = None
    if stepper.num_classes:
        cond = torch.tensor([blk.cond for blk in batch], dtype=torch.long, device=device)
    model_nats = getattr(stepper, "model_nats", None)
    pmfs, state = stepper.init_state(b, cond)
    for t in range(L):
        active = np.flatnonzero(lengths > t)
        pmf = pmfs.cpu().numpy()[active]  # (a, V) int64
        probs = pmf.astype(np.float64) / float(1 << PRECISION)  # exact: a dyadic rational
        known = tokens[active, t] if tokens is not None else None
        out[active, t] = code(active, probs, known)
        if on_step is not None:
            on_step(len(active))
        if stats is not None:
            coded = out[active, t]
            stats.tokens += len(active)
            stats.pmf_bits += float(-np.log2(pmf[np.arange(len(active)), coded]).sum()) + \
                len(active) * PRECISION
            if model_nats is not None:
                stats.model_nats += model_nats(active, coded)
        if t + 1 < L:
            # one batched step for every block, finished ones fed 0: the same input on both sides
            pmfs, state = stepper.step(state, torch.from_numpy(out[:, t].copy()).to(device))
    return out


def encode_batch(stepper: Stepper, batch: list[Block], tokens: np.ndarray,
                 stats: CodingStats | None = None,
                 on_step: Callable[[int], None] | None = None) -> np.ndarray:
    """Range-code one batch; returns the compressed words (uint32)."""
    import constriction

    family = constriction.stream.model.Categorical(perfect=False)  # both sides: perfect=False
    encoder = constriction.stream.queue.RangeEncoder()

    def code(active: np.ndarray, probs: np.ndarray, known: np.ndarray | None) -> np.ndarray:
        encoder.encode(known.astype(np.int32), family, probs)
        return known

    code_batch(stepper, batch, tokens, code, stats, on_step)
    return encoder.get_compressed()


def decode_batch(stepper: Stepper, batch: list[Block], words: np.ndarray,
                 on_step: Callable[[int], None] | None = None) -> np.ndarray:
    """The inverse of `encode_batch`: the (b, L) tokens of one batch from its words."""
    import constriction

    family = constriction.stream.model.Categorical(perfect=False)
    decoder = constriction.stream.queue.RangeDecoder(words)

    def code(active: np.ndarray, probs: np.ndarray, known: np.ndarray | None) -> np.ndarray:
        try:
            return decoder.decode(family, probs).astype(np.int64)
        except Exception as exc:  # constriction refuses a stream it cannot continue
            raise CompressionError(f"the compressed data is damaged: the range decoder stopped "
                                   f"({exc}).") from exc

    return code_batch(stepper, batch, None, code, on_step=on_step)
