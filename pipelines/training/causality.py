"""The run-time causality check: before `tokar train` spends hours on a prior, one cheap probe
that it does not see the future.

An autoregressive prior's params at position s describe x_s given x_<s, so changing token t may
change params only at positions after t. The probe runs the prior's own forward (eval mode, no
gradients, the global random state untouched) on a tiny random batch, changes a few positions t
one at a time, and compares the params at positions <= t. It probes a copy whose parameters got
random noise: a fresh prior may start with zeros (an output layer, a bigram table) that would hide
a leak in its architecture, and causality must hold for any weights. Grids are probed in raster
order, the order the prior reads them in. A prior that leaks is refused in one line naming it and
the first position that leaks; a prior whose forward cannot run on the probe (a fixed length the
probe does not match) is not judged (a debug line says so).

Not here: the full contract suite a plugin author runs (priors/testing.py, more positions and
more checks), training itself (pipelines/training/trainer.py).
"""

from __future__ import annotations

import copy
import logging

import torch

from plugins.errors import CausalityError
from priors.base import Prior

logger = logging.getLogger(__name__)

PROBE_BATCH = 2
PROBE_SEQ_LENGTH = 16  # seq layouts: this many positions (or the prior's context, if shorter)
PROBE_POSITIONS = 6  # positions t changed, spread over the sequence
ATOL = 1e-4


def probe_length(prior: Prior) -> int:
    if prior.layout.kind == "grid":
        return prior.layout.length
    return min(PROBE_SEQ_LENGTH, prior.max_length or PROBE_SEQ_LENGTH)


def first_leak(prior: Prior, name: str | None = None) -> tuple[int, int] | None:
    """(t, s): changing token t changed the params at position s <= t, the smallest such t; None
    when the probe finds no leak (or cannot run)."""
    length = probe_length(prior)
    if length < 2:
        return None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(PROBE_BATCH, length, prior.space.size, generator=g) if prior.space.continuous \
        else torch.randint(0, prior.vocab_size, (PROBE_BATCH, length), generator=g)
    cond = torch.randint(0, prior.num_classes, (PROBE_BATCH,), generator=g) if prior.num_classes \
        else None
    device = next(iter(prior.parameters()), torch.empty(0)).device
    x, cond = x.to(device), cond.to(device) if cond is not None else None
    positions = sorted({round(i * (length - 2) / max(PROBE_POSITIONS - 1, 1))
                        for i in range(PROBE_POSITIONS)})
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            prior = noisy_copy(prior, g)
            base = prior(x, cond)
            for t in positions:
                changed = x.clone()
                if prior.space.continuous:
                    changed[:, t] += 1.0
                else:
                    changed[:, t] = (changed[:, t] + 1) % prior.vocab_size
                out = prior(changed, cond)
                same = torch.isclose(out[:, : t + 1].float(), base[:, : t + 1].float(), atol=ATOL,
                                     rtol=ATOL)
                if not bool(same.all()):
                    differs = (~same).reshape(PROBE_BATCH, t + 1, -1).any(dim=(0, 2))
                    return t, int(differs.nonzero()[0])
    except Exception as exc:  # noqa: BLE001 - a probe the prior cannot run judges nothing
        logger.debug("causality probe of %s did not run: %s", name or type(prior).__name__, exc)
        return None
    return None


def noisy_copy(prior: Prior, generator: torch.Generator) -> Prior:
    """An eval-mode copy of `prior` with noise on every parameter (the original is untouched)."""
    probe = copy.deepcopy(prior).eval()
    for p in probe.parameters():
        if p.is_floating_point():
            p.add_(0.1 * torch.randn(p.shape, generator=generator).to(p.device, p.dtype))
    return probe


def check_causal(prior: Prior, name: str) -> None:
    """Refuse a prior whose params at a position depend on that token or a later one."""
    leak = first_leak(prior, name)
    if leak is not None:
        t, s = leak
        where = "" if prior.layout.kind == "seq" else " (raster order)"
        raise CausalityError(
            f"prior '{name}' sees the future: changing token {t}{where} changed its prediction at "
            f"position {s}, which may depend only on tokens before it; it is not autoregressive "
            "(check its masks or attention), so it cannot be trained as a prior.")
