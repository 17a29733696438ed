"""Likelihood: the one place where tokar computes -log p. Training, validation, `tokar score`,
compression statistics, scheduled sampling, `Prior.log_prob` / `Prior.loss` and MADE's mask
ensemble all call these functions, so every number that claims to be a likelihood is this one.

Three levels, each built on the one before, all in nats:
- `nll(prior, params, x)`: -log p(x | params) through the prior's head, elementwise over
  positions: params (..., n_params) and x (...[, D]) give (...). Every caller that already holds
  head params (a step's output, a second training pass, one mask of MADE's) uses it.
- `token_nll(model, prior, x, cond)`: -log p(x_t | x_<t) of a batch x (B, T[, D]) by teacher
  forcing, (B, T). `model` is the prior or a wrapper of it (DDP, torch.compile), which must be
  called, not bypassed: DDP syncs gradients in its forward.
- `stream_nll(prior, x, cond, batch_size)`: the same for one sequence of any length, (T,):
  windows of the prior's context for bounded priors (GPT: stride half a window, so every token
  is predicted from at least half a context of real history), or exactly, with the state carried
  along, for unbounded ones (LSTM, WaveNet).

Not here: a data set's score in data units, its gathering across processes and per-example
results (pipelines/scoring.py); the heads' own densities (priors/heads); ensembles over
orderings (a prior's `ensemble_log_prob`, MADE's masks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # priors/base.py builds Prior.log_prob on this module
    from priors.base import Prior


def nll(prior: Prior, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | params) in nats under the prior's head: params (..., n_params), x (...[, D])
    -> (...)."""
    return -prior.distribution.log_prob(params, x)


def token_nll(model: torch.nn.Module, prior: Prior, x: torch.Tensor,
              cond: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position NLL (B, T) in nats of x (B, T[, D]) through `model` (the prior or a wrapper)."""
    return nll(prior, model(x, cond), x)


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
        pieces.append(nll(prior, all_params, piece)[0])
        params = step_params[:, -1]
    return torch.cat(pieces) if pieces else x.new_zeros(0, dtype=torch.float32)
