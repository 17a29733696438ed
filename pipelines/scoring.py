"""Likelihood: the one place where tokar computes log p(data), for training evaluation, `tokar
score`, and everything built on per-token and per-example NLL (compression, anomaly detection).

Three levels, each built on the one before:
- `token_nll(model, prior, x, cond)`: -log p(x_t | x_<t) for a batch, (B, T) nats, through the
  prior's head (`prior.distribution.log_prob`). `model` is the prior or a wrapper of it (DDP,
  torch.compile), which must be called, not bypassed.
- `stream_nll(prior, x, cond)`: the same for one sequence of any length, (T,): windows of the
  prior's context for bounded priors (GPT: stride half a window, so every token is predicted
  from at least half a context of real history), or exactly, with the state carried along, for
  unbounded ones (LSTM, WaveNet).
- `score_examples(prior, tokenizer, examples, ...)` for a data set, and `score_batches(...)`
  for the trainer's validation windows: a `Score` in the data's own units (bits per character,
  per subpixel, per audio sample), optionally one `ExampleScore` per example. Under
  `accelerate launch` / `torchrun` every process scores its shard (example i goes to process
  i mod P) and the results are gathered, so scoring scales out like training.

Continuous tokenizers add `tokenizer.discretization_nats()` per position: the density of the
standardised values becomes the probability of the data quantized at the tokenizer's stated step,
so a continuous model's bits compare with a discrete model's of the same signal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from pipelines.io.progress import progress_bar
from plugins.errors import DataError
from priors.base import Prior

LN2 = math.log(2)


def token_nll(model: torch.nn.Module, prior: Prior, x: torch.Tensor,
              cond: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position NLL (B, T) in nats of x (B, T[, D]) through `model` (the prior or a wrapper)."""
    return -prior.distribution.log_prob(model(x, cond), x)


def stream_nll(prior: Prior, x: torch.Tensor, cond: torch.Tensor | None = None,
               batch_size: int = 64) -> torch.Tensor:
    """Per-position NLL (T,) of one sequence x (T[, D]). `cond`: its class label, (1,)."""
    window, T = prior.max_length, x.size(0)
    if window is None:
        return _stateful_nll(prior, x, cond)
    if window >= T:
        return token_nll(prior, prior, x[None], cond)[0]
    stride = max(1, window // 2)
    # Window w covers [s, s + window) and scores the positions no earlier window scored.
    starts = list(range(0, T - window + 1, stride))
    if starts[-1] + window < T:
        starts.append(T - window)
    pieces, scored_to = [], 0
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        batch = torch.stack([x[s : s + window] for s in chunk])
        c = cond.expand(len(chunk)) if cond is not None else None
        for row, s in zip(token_nll(prior, prior, batch, c), chunk, strict=True):
            pieces.append(row[scored_to - s :])
            scored_to = s + window
    return torch.cat(pieces)


def _stateful_nll(prior: Prior, x: torch.Tensor, cond: torch.Tensor | None,
                  chunk: int = 4096) -> torch.Tensor:
    """Through init_state/step in chunks: exact for priors without a context limit, memory
    bounded."""
    params, state = prior.init_state(1, cond)
    pieces = []
    for s in range(0, x.size(0), chunk):
        piece = x[s : s + chunk][None]
        step_params, state = prior.step(state, piece)
        # piece[0] is predicted by the previous step's params; the last output is the next's
        all_params = torch.cat([params[:, None], step_params[:, :-1]], dim=1)  # (1, n, P)
        pieces.append(-prior.distribution.log_prob(all_params, piece)[0])
        params = step_params[:, -1]
    return torch.cat(pieces) if pieces else x.new_zeros(0, dtype=torch.float32)


# -- results --------------------------------------------------------------------------------------
@dataclass
class ExampleScore:
    """One example's exact NLL, in nats, and what it is measured against."""

    id: str
    tokens: int
    units: dict[str, int]  # every unit it can be measured in ({"char": n, "byte": m})
    nats: float  # including the discretization of continuous data
    token_nats: list[float] | None = None  # per position, when asked for (surprise maps)

    def bits_per(self, unit: str) -> float:
        return self.nats / max(self.units[unit], 1) / LN2

    def to_dict(self, unit: str) -> dict[str, Any]:
        return {"id": self.id, "tokens": self.tokens, "units": self.units[unit], "nats": self.nats,
                **{f"bits_per_{u}": self.bits_per(u) for u in self.units}}


@dataclass
class Score:
    """Exact log-likelihood of some data, in the data's own units (bits per unit include the
    discretization of continuous data; nats per token are the model's own, the training loss's
    scale)."""

    unit: str
    bits_per_unit: float
    nats_per_token: float
    tokens: int
    units: int
    examples: int
    bits_per: dict[str, float] = field(default_factory=dict)  # every unit: {"char":.., "byte":..}
    per_example: list[ExampleScore] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "bits_per_unit": self.bits_per_unit,
            **{f"bits_per_{u}": b for u, b in self.bits_per.items()},
            "nats_per_token": self.nats_per_token,
            "tokens": self.tokens,
            "units": self.units,
            "examples": self.examples,
        }

    @classmethod
    def total(cls, nats: float, tokens: int, units: dict[str, int], unit: str, examples: int,
              per_example: list[ExampleScore] | None = None, offset_nats: float = 0.0) -> Score:
        """From total nats in data units (the model's plus `offset_nats` per token)."""
        bits = {u: nats / max(n, 1) / LN2 for u, n in units.items()}
        return cls(unit, bits[unit], nats / max(tokens, 1) - offset_nats, tokens, units[unit],
                   examples, bits, per_example)


# -- a data set -----------------------------------------------------------------------------------
@torch.no_grad()
def score_examples(prior: Prior, tokenizer: Any, examples: Sequence[Any],
                   labels: Sequence[int] | None = None, ids: Sequence[str] | None = None,
                   batch_size: int = 64, per_token: bool = False,
                   state: PartialState | None = None, progress: bool = False) -> Score:
    """Exact NLL of every example, in the tokenizer's units, with one ExampleScore each.
    Grid examples go through the prior `batch_size` at a time; sequences one at a time through
    `stream_nll`. Under a multi-process launch each process scores its shard."""
    if not examples:
        raise DataError("nothing to score: the data is empty.")
    if prior.num_classes and labels is None:
        raise DataError("this prior is class-conditional: scoring needs labelled data "
                        "(tokar score RUN_DIR DATA --class C).")
    state = state or PartialState()
    ids = list(ids) if ids is not None else [str(i) for i in range(len(examples))]
    mine = list(range(state.process_index, len(examples), state.num_processes))
    prior = prior.eval()
    device = next(prior.parameters()).device
    offset = tokenizer.discretization_nats()
    encoded = {i: tokenizer.encode(examples[i]) for i in mine}
    values = {i: _flat(e, prior) for i, e in encoded.items()}
    nll: dict[int, torch.Tensor] = {}
    bar = progress_bar(total=sum(int(values[i].shape[0]) for i in mine), desc="scoring", unit="token",
                       disable=not (progress and state.is_main_process), leave=False)
    with bar:
        if prior.layout.kind == "grid":
            for b in range(0, len(mine), batch_size):
                rows = mine[b : b + batch_size]
                x = torch.stack([values[i] for i in rows]).to(device)
                c = torch.as_tensor([labels[i] for i in rows], device=device) if prior.num_classes else None
                for i, row in zip(rows, token_nll(prior, prior, x, c), strict=True):
                    nll[i] = row
                bar.update(int(x.shape[0] * x.shape[1]))
        else:
            for i in mine:
                c = torch.tensor([labels[i]], device=device) if prior.num_classes else None
                nll[i] = stream_nll(prior, values[i].to(device), c, batch_size)
                bar.update(int(values[i].shape[0]))
    results = []
    for i in mine:
        token_nats = nll[i].double().cpu() + offset
        results.append((i, ExampleScore(ids[i], int(token_nats.numel()),
                                        tokenizer.unit_counts(examples[i]), float(token_nats.sum()),
                                        token_nats.tolist() if per_token else None)))
    if state.num_processes > 1:
        results = sorted(gather_object(results))  # every process's share, back in data order
    return _summed([r for _, r in results], tokenizer.unit, offset)


def _flat(encoded: torch.Tensor, prior: Prior) -> torch.Tensor:
    """An encoded example as the prior reads it: (T,) ids or (T, D) reals, raster order."""
    if prior.space.continuous:
        return encoded.reshape(-1, prior.space.size).float()
    return encoded.reshape(-1)


def _summed(results: list[ExampleScore], unit: str, offset_nats: float) -> Score:
    units: dict[str, int] = {}
    for r in results:
        for u, n in r.units.items():
            units[u] = units.get(u, 0) + n
    nats = sum(r.nats for r in results)
    return Score.total(nats, sum(r.tokens for r in results), units, unit, len(results), results,
                       offset_nats)


# -- the trainer's validation windows --------------------------------------------------------------
@torch.no_grad()
def score_batches(model: torch.nn.Module, prior: Prior, batches: Iterable[dict[str, torch.Tensor]],
                  accelerator: Any, units_per_token: float, unit: str,
                  offset_nats: float = 0.0) -> Score:
    """NLL of the validation windows the trainer holds (each process its share, reduced across
    processes): nats per token in the model's space, bits per data unit. `units_per_token` is
    the split's ratio of data units to tokens; `offset_nats` the tokenizer's discretization."""
    nats = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    tokens = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for batch in batches:
        x = batch["ids"]
        cond = batch.get("label") if prior.num_classes else None
        per_seq = token_nll(model, prior, x, cond).sum(dim=1)  # (B,)
        per_seq, n = accelerator.gather_for_metrics((per_seq, torch.full_like(per_seq, x.size(1))))
        nats += per_seq.double().sum()
        tokens += n.double().sum()
    n_tokens = int(tokens.item())
    nats_per_token = nats.item() / max(n_tokens, 1) + offset_nats  # in data units
    bits = nats_per_token / units_per_token / LN2
    return Score(unit, bits, nats_per_token - offset_nats, n_tokens,
                 round(n_tokens * units_per_token), 0, {unit: bits})
