"""Exact log-likelihood of data in the data's own units (bits per character, per subpixel...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from priors.base import Prior, model_nll, token_nll


@dataclass
class Score:
    """Exact log-likelihood of some data, in the data's own units."""

    unit: str
    bits_per_unit: float
    nats_per_token: float
    tokens: int
    units: int
    examples: int
    bits_per: dict[str, float] = field(default_factory=dict)  # every unit: {"char":.., "byte":..}

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


def stream_nll(prior: Prior, ids: torch.Tensor, batch_size: int,
               cond: torch.Tensor | None = None) -> float:
    """Total NLL (nats) of one long sequence, by windows of the prior's context (or, for
    priors without a context limit such as an LSTM or WaveNet, exactly, carrying the state
    along). `cond`: the sequence's class label, a (1,) tensor, for conditional priors."""
    window = prior.max_length
    if window is None:
        return stateful_nll(prior, ids, cond=cond)
    if ids.numel() <= window:
        return -prior.log_prob(ids[None], cond).item()
    stride = max(1, window // 2)
    # Window w covers [s, s + window) and scores the tokens not already scored by earlier ones.
    starts = list(range(0, ids.numel() - window + 1, stride))
    if starts[-1] + window < ids.numel():
        starts.append(ids.numel() - window)
    total, scored_to = 0.0, 0
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        batch = torch.stack([ids[s : s + window] for s in chunk])
        c = cond.expand(len(chunk)) if cond is not None else None
        nll = model_nll(prior, prior, batch, c)  # (b, window)
        for row, s in zip(nll, chunk, strict=True):
            first = scored_to - s  # positions before this were scored by an earlier window
            total += row[first:].sum().item()
            scored_to = s + window
    return total


def stateful_nll(prior: Prior, ids: torch.Tensor, chunk: int = 4096,
                 cond: torch.Tensor | None = None) -> float:
    """-log p(ids) through init_state/step in chunks: exact, memory bounded."""
    logits, state = prior.init_state(1, cond)
    total = 0.0
    for s in range(0, ids.numel(), chunk):
        piece = ids[s : s + chunk]
        step_logits, state = prior.step(state, piece[None])
        # logits for piece[0] come from the previous step; the last step output is the next's
        all_logits = torch.cat([logits[:, None], step_logits[:, :-1]], dim=1)  # (1, n, V)
        total += token_nll(all_logits, piece[None]).sum().item()
        logits = step_logits[:, -1]
    return total


