"""Ancestral sampling (and greedy decoding): one step of the prior per value, each drawn from
the head's distribution after the logits processors (discrete heads) or from the head directly
at a temperature (continuous heads). Built only on `init_state` / `step` and the shared pieces
of priors/decoding.py."""

from __future__ import annotations

from collections.abc import Callable

import torch

from priors.base import Prior
from priors.decoding import DecodeConfig, Generation, StopTokens, next_values, start


def sample(prior: Prior, batch_size: int, config: DecodeConfig, processors, cond, prompt,
           generator, on_step: Callable[[], None] | None = None) -> Generation:
    params, state, context = start(prior, batch_size, cond, prompt)
    n, head = config.max_new_tokens, prior.distribution
    out = torch.empty(batch_size, n, *context.shape[2:], dtype=context.dtype, device=params.device)
    stops = StopTokens(config.stop_tokens, batch_size, n, params.device)
    for t in range(n):
        ctx = torch.cat([context, out[:, :t]], dim=1) if processors else context
        value = next_values(head, params, ctx, processors, config, generator)  # (B, 1[, D])
        value = stops.update(value, out[:, t - 1 : t] if t else None, t)
        out[:, t : t + 1] = value
        if on_step is not None:  # progress: one more position drawn
            on_step()
        if t + 1 == n or stops.all_done:
            if t + 1 < n:
                out[:, t + 1 :] = out[:, t : t + 1]
            break
        step_params, state = prior.step(state, value)
        params = step_params[:, -1]
    return Generation(out, stops.lengths)
