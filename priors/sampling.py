"""Decoding strategies shared by every prior, built only on `init_state` / `step`.

A prior never writes sampling code: it exposes its incremental state and gets every strategy here.
Logits processors are plain callables `(logits (B, V), generated (B, t)) -> logits` applied in
order, so strategies compose and a plugin can add its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from priors.base import Prior

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def temperature(t: float) -> LogitsProcessor:
    if t <= 0:
        raise ValueError(f"temperature must be > 0 (got {t}); use greedy decoding for t -> 0")

    def apply(logits: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        return logits / t

    return apply


def top_k(k: int) -> LogitsProcessor:
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")

    def apply(logits: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        if k >= logits.size(-1):
            return logits
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, float("-inf"))

    return apply


def build_processors(temperature_: float = 1.0, top_k_: int | None = None) -> list[LogitsProcessor]:
    processors: list[LogitsProcessor] = []
    if temperature_ != 1.0:
        processors.append(temperature(temperature_))
    if top_k_ is not None:
        processors.append(top_k(top_k_))
    return processors


@torch.no_grad()
def generate(
    prior: Prior,
    batch_size: int,
    max_new_tokens: int,
    *,
    processors: Sequence[LogitsProcessor] = (),
    greedy: bool = False,
    cond: torch.Tensor | None = None,
    prompt: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample `max_new_tokens` tokens for each of `batch_size` sequences: LongTensor (B, N).

    `prompt` (B, P) is fed in one parallel pass and not included in the output.
    """
    was_training = prior.training
    prior.eval()
    try:
        logits, state = prior.init_state(batch_size, cond)
        if prompt is not None and prompt.size(1) > 0:
            step_logits, state = prior.step(state, prompt)
            logits = step_logits[:, -1]
        device = logits.device
        out = torch.empty(batch_size, 0, dtype=torch.long, device=device)
        for t in range(max_new_tokens):
            logits = logits.float()
            for process in processors:
                logits = process(logits, out)
            if greedy:
                token = logits.argmax(dim=-1, keepdim=True)
            else:
                probs = torch.softmax(logits, dim=-1)
                token = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
            out = torch.cat([out, token], dim=1)
            if t + 1 < max_new_tokens:
                step_logits, state = prior.step(state, token)
                logits = step_logits[:, -1]
        return out
    finally:
        prior.train(was_training)
