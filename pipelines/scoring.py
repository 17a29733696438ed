"""Scoring: the exact NLL of a data set in the data's own units (bits per character, per
subpixel, per audio sample), for `tokar score`, the trainer's validation, and everything built on
per-example NLL (anomaly detection, surprise maps). The per-token -log p itself comes from
priors/likelihood.py (`token_nll`, `stream_nll`), the one place it is computed.

- `score_examples(prior, tokenizer, examples, ...)` for a data set: a `Score`, optionally one
  `ExampleScore` per example. Grid examples go through the prior in batches, sequences one at a
  time through `stream_nll`; with `ensemble=N` each example is scored by the prior's ensemble of
  orderings (MADE's masks: -log of the mean of the first N masks' likelihoods, totals only).
  Under `accelerate launch` / `torchrun` every process scores its shard (example i goes to
  process i mod P) and the results are gathered, so scoring scales out like training.
- `score_batches(...)` for the trainer's validation windows, reduced across processes.

Continuous tokenizers add `tokenizer.discretization_nats()` per position: the density of the
standardised values becomes the probability of the data quantized at the tokenizer's stated step,
so a continuous model's bits compare with a discrete model's of the same signal.

Not here: -log p itself (priors/likelihood.py), reading data files (pipelines/cli/main.py), the
detection scores built on these (pipelines/detection).
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
from plugins.errors import DataError, TokarError
from priors.base import Prior
from priors.likelihood import stream_nll, token_nll

LN2 = math.log(2)


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
                   state: PartialState | None = None, progress: bool = False,
                   ensemble: int | None = None) -> Score:
    """Exact NLL of every example, in the tokenizer's units, with one ExampleScore each.
    Grid examples go through the prior `batch_size` at a time; sequences one at a time through
    `stream_nll`. `ensemble=N`: each example's NLL is -log of the mean likelihood under the
    prior's first N orderings (`Prior.ensemble_log_prob`); there are no per-token values then.
    Under a multi-process launch each process scores its shard."""
    if not examples:
        raise DataError("nothing to score: the data is empty.")
    if prior.num_classes and labels is None:
        raise DataError("this prior is class-conditional: scoring needs labelled data "
                        "(tokar score RUN_DIR DATA --class C).")
    if ensemble is not None and per_token:
        raise TokarError(f"per-token NLL is not defined for an ensemble of orderings (ensemble="
                         f"{ensemble}): each ordering splits log p(x) differently; drop one of them")
    state = state or PartialState()
    ids = list(ids) if ids is not None else [str(i) for i in range(len(examples))]
    mine = list(range(state.process_index, len(examples), state.num_processes))
    prior = prior.eval()
    device = next(prior.parameters()).device
    offset = tokenizer.discretization_nats()
    encoded = {i: tokenizer.encode(examples[i]) for i in mine}
    values = {i: _flat(e, prior) for i, e in encoded.items()}
    # per example: (T,) per-token nats, or with an ensemble its total, a 0-dim tensor
    nll: dict[int, torch.Tensor] = {}
    bar = progress_bar(total=sum(int(values[i].shape[0]) for i in mine), desc="scoring", unit="token",
                       disable=not (progress and state.is_main_process), leave=False)
    step = batch_size if prior.layout.kind == "grid" else 1  # grids stack; sequences vary in length
    with bar:
        for b in range(0, len(mine), step):
            rows = mine[b : b + step]
            c = torch.as_tensor([labels[i] for i in rows], device=device) if prior.num_classes else None
            if ensemble is not None:
                x = torch.stack([values[i] for i in rows]).to(device)
                nll.update(zip(rows, -prior.ensemble_log_prob(x, c, ensemble), strict=True))
            elif prior.layout.kind == "grid":
                x = torch.stack([values[i] for i in rows]).to(device)
                nll.update(zip(rows, token_nll(prior, prior, x, c), strict=True))
            else:
                nll[rows[0]] = stream_nll(prior, values[rows[0]].to(device), c, batch_size)
            bar.update(sum(int(values[i].shape[0]) for i in rows))
    results = []
    for i in mine:
        tokens = int(values[i].size(0))
        if ensemble is not None:
            nats, token_nats = float(nll[i].double().cpu()) + offset * tokens, None
        else:
            per = nll[i].double().cpu() + offset
            nats, token_nats = float(per.sum()), per.tolist() if per_token else None
        results.append((i, ExampleScore(ids[i], tokens, tokenizer.unit_counts(examples[i]), nats,
                                        token_nats)))
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
