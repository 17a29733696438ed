"""Logits processors: callables `(logits (B, V), context (B, t)) -> logits` that reshape a
discrete head's next-token distribution before a value is picked. They compose in order
(`context` is the prompt and everything generated so far); the built-ins are below, plugins
register more through the `tokar_register_logits_processors` hook, and `resolve_processors`
turns a recipe's `[{name: ban_token, token: 3}]` into callables through that registry.

The bottom layer of decoding: priors/decoding.py (shared pieces) builds on it, the strategies
(sampling, beam, speculative) on that, and priors/generate.py on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from plugins.errors import DecodingError
from plugins.manager import get_registries
from plugins.registry import Registry

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


def resolve_processors(specs: list[dict[str, Any]], registry: Registry | None = None
                       ) -> list[LogitsProcessor]:
    """[{name: ..., **settings}] -> processors, looked up in `registry`: the one a pipeline
    resolved its recipe in (None: the process-wide registry, built-ins and installed plugins).
    An unknown name is a RegistryError (with the closest match), bad settings a DecodingError."""
    registry = registry if registry is not None else get_registries().processors
    out = []
    for spec in specs:
        if not isinstance(spec, dict):
            raise DecodingError(f"a processor is a mapping {{name: ..., settings...}}, got {spec!r}.")
        settings = dict(spec)
        name = settings.pop("name", None)
        if name is None:
            raise DecodingError(f"processor {spec} needs a 'name' (one of "
                                f"{', '.join(registry.names())}).")
        factory = registry.get(str(name))
        try:
            out.append(factory(**settings))
        except (TypeError, ValueError) as exc:
            raise DecodingError(f"logits processor '{name}' with {settings}: {exc}") from exc
    return out
