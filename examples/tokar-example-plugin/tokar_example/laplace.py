"""A Laplace head for real values: p(x) = exp(-|x - mu| / b) / (2b) per dimension, a heavier
tail than the Gaussian. Parameters per position: D locations and D log-scales. Temperature T
raises the density to 1/T, which multiplies the scale by T."""

from __future__ import annotations

import math

import torch

from priors.heads import Head


class Laplace(Head):
    name = "laplace"
    continuous = True  # models real values (a discrete head would set False and define logits)

    @property
    def n_params(self) -> int:
        return 2 * self.space.size

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = params.float().chunk(2, dim=-1)
        return loc, log_scale.clamp(min=-7.0)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loc, log_scale = self._split(params)
        return (-(x.float() - loc).abs() * torch.exp(-log_scale) - log_scale - math.log(2)).sum(-1)

    def sample(self, params: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        loc, log_scale = self._split(params)
        device = generator.device if generator is not None else loc.device
        u = torch.rand(loc.shape, generator=generator, device=device).to(loc.device) - 0.5
        noise = -torch.sign(u) * torch.log1p(-2 * u.abs())  # inverse CDF of Laplace(0, 1)
        return loc + torch.exp(log_scale) * temperature * noise
