"""Continuous heads: a diagonal Gaussian, and a mixture of them, the mixture density network of
Bishop (1994) as used for real-valued autoregressive models (RNADE, Uria et al. 2013; MADE-MoG,
Germain et al. 2015; Graves 2013 for handwriting).

A position holds D real numbers. `gaussian` outputs a mean and a log standard deviation per
dimension (2D params); `gaussian_mixture` outputs K mixture logits, then K x D means and K x D
log standard deviations (K(1 + 2D) params), and its density is
    p(x) = sum_k pi_k prod_d N(x_d; mu_kd, sigma_kd).
Log standard deviations are clamped below at MIN_LOG_SCALE so that a density cannot collapse onto
a repeated value (digital silence) and reach infinite likelihood.

Temperature T scales as for a density raised to 1/T: the variance of each component is
multiplied by T, and the mixture weights become softmax(logits / T) (the usual MDN practice,
Ha & Eck 2017).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from priors.heads.base import Head, HeadConfig, draw, normal_noise

MIN_LOG_SCALE = -7.0
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_density(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_std)^2) elementwise."""
    return -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - HALF_LOG_2PI


class Gaussian(Head):
    name = "gaussian"
    continuous = True

    @property
    def n_params(self) -> int:
        return 2 * self.space.size

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = params.float().chunk(2, dim=-1)  # (..., D) each
        return mean, log_std.clamp(min=MIN_LOG_SCALE)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, log_std = self._split(params)
        return normal_log_density(x.float(), mean, log_std).sum(-1)

    def sample(self, params: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        mean, log_std = self._split(params)
        noise = normal_noise(mean.shape, mean, generator)
        return mean + torch.exp(log_std) * math.sqrt(temperature) * noise


class GaussianMixtureConfig(HeadConfig):
    n_mixtures: int = Field(5, ge=1, description="Gaussian components K")


class GaussianMixture(Head):
    name = "gaussian_mixture"
    Config = GaussianMixtureConfig
    continuous = True

    @property
    def n_params(self) -> int:
        return self.config.n_mixtures * (1 + 2 * self.space.size)

    def _split(self, params: torch.Tensor):
        """params (..., K(1 + 2D)) -> logits (..., K), means and log-stds (..., K, D)."""
        K, D = self.config.n_mixtures, self.space.size
        params = params.float()
        logits = params[..., :K]
        mean, log_std = params[..., K:].unflatten(-1, (2, K, D)).unbind(-3)
        return logits, mean, log_std.clamp(min=MIN_LOG_SCALE)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, mean, log_std = self._split(params)
        per_component = normal_log_density(x.float()[..., None, :], mean, log_std).sum(-1)  # (..., K)
        return torch.logsumexp(F.log_softmax(logits, -1) + per_component, -1)

    def sample(self, params: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        logits, mean, log_std = self._split(params)
        k = draw(torch.softmax(logits / temperature, -1), generator)  # (...)
        pick = k[..., None, None].expand(*k.shape, 1, mean.size(-1))
        mean, log_std = mean.gather(-2, pick)[..., 0, :], log_std.gather(-2, pick)[..., 0, :]
        noise = normal_noise(mean.shape, mean, generator)
        return mean + torch.exp(log_std) * math.sqrt(temperature) * noise
