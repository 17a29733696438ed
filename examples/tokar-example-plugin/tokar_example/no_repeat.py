"""A logits processor: never complete an n-gram that already occurs in the context (the
no-repeat-n-gram rule of Hugging Face's generate). Registered as a factory: the recipe's
`{name: no_repeat_ngram, n: 2}` calls no_repeat_ngram(n=2) once, and the returned function runs
at every step on (logits (B, V), context (B, t))."""

from __future__ import annotations

import torch


def no_repeat_ngram(n: int = 2):
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")

    def apply(logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if context.size(1) < n - 1:
            return logits
        logits = logits.clone()
        for row, tokens in enumerate(context.tolist()):
            prefix = tuple(tokens[len(tokens) - (n - 1) :]) if n > 1 else ()
            banned = {tokens[i + n - 1] for i in range(len(tokens) - n + 1)
                      if tuple(tokens[i : i + n - 1]) == prefix}
            if banned:
                logits[row, sorted(banned)] = float("-inf")
        return logits

    return apply
