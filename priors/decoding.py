"""The shared pieces of decoding, below every strategy and above the logits processors:

- `DecodeConfig` (how to decode) and `Generation` (what every strategy returns);
- `start` / `feed`: a prior's state after an optional prompt, through `init_state` / `step`;
- `process` and `pick`: the discrete path, from a head's params to logits, through the
  processors, to one id per row; `next_values` chooses between it and a continuous head's own
  `sample`;
- `StopTokens`: which rows have ended, and their lengths;
- `check_config`: options a prior or head cannot honour, as one clear DecodingError.

Strategies (priors/sampling.py, beam.py, speculative.py) build only on these and on the prior's
incremental API, so a new prior gets all of them; priors/generate.py picks one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from plugins.errors import DecodingError
from priors.base import Prior
from priors.heads.base import Head, draw
from priors.processors import (
    LogitsProcessor,
    min_p,
    repetition_penalty,
    temperature,
    top_k,
    top_p,
)


class DecodeConfig(BaseModel):
    """How to decode. The plain fields build the built-in processors, applied in the order
    repetition_penalty, temperature, top_k, top_p, min_p; `processors` names more."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(256, ge=1, description="tokens to generate (grids: fixed)")
    temperature: float = Field(1.0, gt=0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    min_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    greedy: bool = False
    num_beams: int = Field(1, ge=1, description="beam search when > 1")
    length_penalty: float = Field(1.0, description="beam scores are divided by length**this")
    stop_tokens: list[int] = Field(default_factory=list, description="ids that end a sequence")
    num_draft_tokens: int = Field(4, ge=1, description="speculative decoding: tokens per draft")
    compile: bool = Field(False, description="compile the prior's one-token step and a draft "
                          "prior's (priors that offer it: wavenet, a native loop on a CPU, "
                          "compiled once and cached on disk; torch.compile elsewhere, tens of "
                          "seconds per process)")
    processors: list[dict] = Field(
        default_factory=list,
        description="more processors by registered name, after the built-in fields: "
        "[{name: ban_token, token: 3}]; plugins register them")

    def builtin_processors(self) -> list[LogitsProcessor]:
        out = []
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            out.append(repetition_penalty(self.repetition_penalty))
        if self.temperature != 1.0:
            out.append(temperature(self.temperature))
        if self.top_k is not None:
            out.append(top_k(self.top_k))
        if self.top_p is not None and self.top_p < 1.0:
            out.append(top_p(self.top_p))
        if self.min_p is not None:
            out.append(min_p(self.min_p))
        return out

    def discrete_only(self) -> list[str]:
        """The options set here that only mean something for a discrete head."""
        named = {"top_k": self.top_k, "top_p": self.top_p, "min_p": self.min_p,
                 "repetition_penalty": self.repetition_penalty, "stop_tokens": self.stop_tokens,
                 "processors": self.processors}
        out = [k for k, v in named.items() if v]
        if self.greedy:
            out.append("greedy")
        if self.num_beams > 1:
            out.append("num_beams")
        return out


@dataclass
class Generation:
    """What every decoding strategy returns."""

    tokens: torch.Tensor  # (B, N) new ids, or (B, N, D) reals; after a stop token, more of it
    lengths: torch.Tensor  # (B,) tokens up to and including the stop token (N if none)
    proposed: int = 0  # speculative decoding: draft tokens proposed ...
    accepted: int = 0  # ... and accepted by the target

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None

    def sequences(self) -> list[torch.Tensor]:
        """Each row cut at its length."""
        return [row[: int(n)] for row, n in zip(self.tokens, self.lengths, strict=True)]


def check_config(prior: Prior, config: DecodeConfig, has_draft: bool, has_processors: bool) -> None:
    """Refuse what this prior's head cannot do, before any work."""
    if has_draft and config.num_beams > 1:
        raise DecodingError("beam search and speculative decoding do not combine: drop the draft "
                            "or set num_beams=1.")
    if config.num_beams > 1 and type(prior).reorder_state is Prior.reorder_state:
        raise DecodingError(f"beam search needs a prior that can reorder its decoding state; "
                            f"prior '{prior.name}' cannot (it does not implement reorder_state): "
                            "sample or decode greedily instead.")
    if prior.distribution.continuous:
        wrong = config.discrete_only() + (["draft"] if has_draft else []) + \
            (["processors"] if has_processors else [])
        if wrong:
            raise DecodingError(
                f"{', '.join(sorted(set(wrong)))}: only for discrete heads; head "
                f"'{prior.distribution.name}' models real values, which have no per-value "
                "probabilities to filter, rank or draft. Sample with a temperature instead.")


# -- the discrete path: params -> logits -> processors -> one id ----------------------------------
def process(logits: torch.Tensor, context: torch.Tensor,
            processors: Sequence[LogitsProcessor]) -> torch.Tensor:
    logits = logits.float()
    for p in processors:
        logits = p(logits, context)
    return logits


def pick(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row from processed logits (B, V) -> (B, 1)."""
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)
    return draw(torch.softmax(logits, dim=-1), generator)[:, None]


def next_values(head: Head, params: torch.Tensor, context: torch.Tensor,
                processors: Sequence[LogitsProcessor], config: DecodeConfig,
                generator: torch.Generator | None) -> torch.Tensor:
    """The next value of every row from the head's params (B, P): ids (B, 1) through the
    processors, or (continuous heads) reals (B, 1, D) from the head at config.temperature."""
    if head.continuous:
        return head.sample(params, config.temperature, generator)[:, None]
    return pick(process(head.logits(params), context, processors), config.greedy, generator)


# -- the prior's state ----------------------------------------------------------------------------
def feed(prior: Prior, state, values: torch.Tensor):
    """Feed values (B, k[, D]) in one call (priors split what they must); returns (last params,
    state)."""
    out, state = prior.step(state, values)
    return out[:, -1], state


def start(prior: Prior, batch_size: int, cond: torch.Tensor | None, prompt: torch.Tensor | None):
    """Initial state, next params and context after an optional prompt."""
    params, state = prior.init_state(batch_size, cond)
    device = params.device
    shape = (prior.space.size,) if prior.space.continuous else ()
    dtype = torch.float32 if prior.space.continuous else torch.long
    context = torch.empty(batch_size, 0, *shape, dtype=dtype, device=device)
    if prompt is not None and prompt.size(1) > 0:
        prompt = prompt.to(device)
        params, state = feed(prior, state, prompt)
        context = prompt
    return params, state, context


class StopTokens:
    """Rows that have emitted a stop token: they keep repeating it, and their length is fixed
    at the position where it first appeared."""

    def __init__(self, stop_tokens: list[int], batch_size: int, n: int, device: torch.device):
        self.stops = torch.tensor(stop_tokens, dtype=torch.long, device=device)
        self.lengths = torch.full((batch_size,), n, dtype=torch.long, device=device)
        self.done = torch.zeros(batch_size, dtype=torch.bool, device=device)

    @property
    def active(self) -> bool:
        return len(self.stops) > 0

    @property
    def all_done(self) -> bool:
        return self.active and bool(self.done.all())

    def update(self, token: torch.Tensor, previous: torch.Tensor | None, t: int) -> torch.Tensor:
        """token (B, 1) emitted at position t; rows already done repeat `previous` (B, 1)."""
        if not self.active:
            return token
        if previous is not None:
            token = torch.where(self.done[:, None], previous, token)
        hit = torch.isin(token[:, 0], self.stops) & ~self.done
        self.lengths = torch.where(hit, torch.full_like(self.lengths, t + 1), self.lengths)
        self.done |= hit
        return token
