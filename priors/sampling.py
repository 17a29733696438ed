"""Decoding strategies shared by every prior, built only on `init_state` / `step`.

A prior never writes sampling code: it exposes its incremental state and gets every strategy
here. Logits processors are callables `(logits (B, V), context (B, t)) -> logits` applied in order
(`context` is the prompt and everything generated so far), so strategies compose; plugins register
more through the `tokar_register_logits_processors` hook.

    generate(prior, 4, DecodeConfig(max_new_tokens=100, temperature=0.8, top_p=0.9))

Beam search lives in priors/beam.py, speculative decoding in priors/speculative.py; `generate`
dispatches to them from the same DecodeConfig.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from plugins.errors import DecodingError
from priors.base import Prior

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NEG_INF = float("-inf")


# -- logits processors ----------------------------------------------------------------------------
def temperature(t: float) -> LogitsProcessor:
    """Divide logits by t: t < 1 sharpens, t > 1 flattens."""
    if t <= 0:
        raise ValueError(f"temperature must be > 0 (got {t}); use greedy decoding for t -> 0")
    return lambda logits, context: logits / t


def top_k(k: int) -> LogitsProcessor:
    """Keep the k most likely tokens (Fan et al. 2018)."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")

    def apply(logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if k >= logits.size(-1):
            return logits
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, NEG_INF)

    return apply


def top_p(p: float) -> LogitsProcessor:
    """Nucleus sampling (Holtzman et al. 2020): the smallest set of tokens whose probability
    reaches p; the most likely token always stays."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")

    def apply(logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= p  # mass before this token >= p
        drop = drop.scatter(-1, order, drop)  # back to vocabulary order
        return logits.masked_fill(drop, NEG_INF)

    return apply


def min_p(p: float) -> LogitsProcessor:
    """Drop tokens less likely than p times the most likely one (Nguyen et al. 2024)."""
    if not 0 < p <= 1:
        raise ValueError(f"min_p must be in (0, 1], got {p}")

    def apply(logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=-1)
        return logits.masked_fill(probs < p * probs.max(dim=-1, keepdim=True).values, NEG_INF)

    return apply


def repetition_penalty(penalty: float) -> LogitsProcessor:
    """Make tokens already in the context less likely (Keskar et al. 2019, CTRL): positive logits
    are divided by `penalty`, negative ones multiplied."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")

    def apply(logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if context.size(1) == 0:
            return logits
        seen = torch.gather(logits, 1, context)
        seen = torch.where(seen > 0, seen / penalty, seen * penalty)
        return logits.scatter(1, context, seen)

    return apply


BUILTIN_PROCESSORS: dict[str, Callable[..., LogitsProcessor]] = {
    "temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p,
    "repetition_penalty": repetition_penalty,
}


# -- configuration and result ---------------------------------------------------------------------
class DecodeConfig(BaseModel):
    """How to decode. The plain fields build the built-in processors, applied in the order
    repetition_penalty, temperature, top_k, top_p, min_p."""

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
    processors: list[dict] = Field(
        default_factory=list,
        description="more processors by registered name, after the built-in fields: "
        "[{name: ban_token, token: 3}]; resolved by pipelines (plugins register them)")

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


@dataclass
class Generation:
    """What every decoding strategy returns."""

    tokens: torch.Tensor  # (B, N) new tokens; after a stop token, more stop tokens
    lengths: torch.Tensor  # (B,) tokens up to and including the stop token (N if none)
    proposed: int = 0  # speculative decoding: draft tokens proposed ...
    accepted: int = 0  # ... and accepted by the target

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None

    def sequences(self) -> list[torch.Tensor]:
        """Each row cut at its length."""
        return [row[: int(n)] for row, n in zip(self.tokens, self.lengths, strict=True)]


# -- shared helpers ------------------------------------------------------------------------------
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
    probs = torch.softmax(logits, dim=-1)
    if generator is not None and generator.device != probs.device:  # sample where the generator is
        return torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)


def feed(prior: Prior, state, ids: torch.Tensor):
    """Feed ids (B, k) in one call (priors split what they must); returns (last logits, state)."""
    out, state = prior.step(state, ids)
    return out[:, -1], state


def start(prior: Prior, batch_size: int, cond: torch.Tensor | None, prompt: torch.Tensor | None):
    """Initial state, next-token logits and context after an optional prompt."""
    logits, state = prior.init_state(batch_size, cond)
    device = logits.device
    context = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    if prompt is not None and prompt.size(1) > 0:
        prompt = prompt.to(device)
        logits, state = feed(prior, state, prompt)
        context = prompt
    return logits, state, context


# -- the entry point -----------------------------------------------------------------------------
@torch.no_grad()
def generate(
    prior: Prior,
    batch_size: int,
    config: DecodeConfig | None = None,
    *,
    cond: torch.Tensor | None = None,
    prompt: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    draft: Prior | None = None,
    processors: Sequence[LogitsProcessor] = (),
) -> Generation:
    """Generate `config.max_new_tokens` tokens for `batch_size` sequences.

    `prompt` (B, P) is fed in one parallel pass (in chunks past the context) and is not part of
    the output. `processors` run after the ones `config` describes. With `config.num_beams > 1`
    this is beam search; with a `draft` prior, speculative decoding (same distribution, fewer
    target passes).
    """
    config = config or DecodeConfig()
    if draft is not None and config.num_beams > 1:
        raise DecodingError("beam search and speculative decoding do not combine: drop the draft "
                            "or set num_beams=1.")
    all_processors = [*config.builtin_processors(), *processors]
    if prompt is not None and prompt.size(0) != batch_size:
        raise ValueError(f"prompt has {prompt.size(0)} rows, batch_size is {batch_size}")
    was_training = prior.training
    prior.eval()
    try:
        if config.num_beams > 1:
            from priors.beam import beam_search

            return beam_search(prior, batch_size, config, all_processors, cond, prompt)
        if draft is not None:
            from priors.speculative import speculative

            return speculative(prior, draft, batch_size, config, all_processors, cond, prompt,
                               generator)
        return _sample(prior, batch_size, config, all_processors, cond, prompt, generator)
    finally:
        prior.train(was_training)


def _sample(prior, batch_size, config, processors, cond, prompt, generator) -> Generation:
    """Ancestral sampling (or greedy): one step of the prior per token."""
    logits, state, context = start(prior, batch_size, cond, prompt)
    n = config.max_new_tokens
    out = torch.empty(batch_size, n, dtype=torch.long, device=logits.device)
    lengths = torch.full((batch_size,), n, dtype=torch.long, device=logits.device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=logits.device)
    stops = torch.tensor(config.stop_tokens, dtype=torch.long, device=logits.device)
    for t in range(n):
        ctx = torch.cat([context, out[:, :t]], dim=1) if processors else context
        token = pick(process(logits, ctx, processors), config.greedy, generator)  # (B, 1)
        if len(stops):
            token = torch.where(done[:, None], out[:, t - 1 : t] if t else token, token)
            hit = torch.isin(token[:, 0], stops) & ~done
            lengths = torch.where(hit, torch.full_like(lengths, t + 1), lengths)
            done |= hit
        out[:, t : t + 1] = token
        if t + 1 == n or (len(stops) and bool(done.all())):
            if t + 1 < n:
                out[:, t + 1 :] = out[:, t : t + 1]
            break
        step_logits, state = prior.step(state, token)
        logits = step_logits[:, -1]
    return Generation(out, lengths)
