"""The discretized logistic mixture of PixelCNN++ (Salimans et al. 2017), as a head.

A softmax over 256 intensities learns from scratch that 127 and 128 are neighbours. PixelCNN++
instead puts a mixture of K logistic distributions on the continuous intensity axis and gives
each of the V integer values the mass of its bin, so nearby values share probability and the
head needs 3K numbers per token instead of V.

Value v in [0, V) sits at x_v = 2v / (V - 1) - 1 in [-1, 1], its bin is [x_v - d, x_v + d] with
d = 1 / (V - 1), and the two edge bins stretch to -inf and +inf, so the V masses sum to one
exactly. The likelihood of an observed value needs only its own bin (K evaluations per token,
not K x V), which is what makes training with this head affordable; `logits` gives all V
log-masses for everything that consumes them (temperature and top-p sampling, beam search,
entropy coding). The head fits any prior over ordered discrete values (pixels, mu-law audio,
codes with an order); the channels of a pixel are coupled by the network (the PixelCNN's channel
masks), not by PixelCNN++'s linear mean coefficients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from plugins.shared import ValueSpace
from priors.heads.base import Head, HeadConfig

PARAMS_PER_COMPONENT = 3  # mixture logit, mean, log-scale
MIN_LOG_SCALE = -7.0  # as in PixelCNN++: keeps 1/s finite


def _log_bin_mass(values: torch.Tensor, mean: torch.Tensor, inv_s: torch.Tensor,
                  vocab_size: int) -> torch.Tensor:
    """log P(bin of each value) under each logistic: values broadcast against mean, inv_s."""
    half_bin = 1.0 / (vocab_size - 1)
    centred = values * (2 * half_bin) - 1 - mean  # x_v - mean, x_v = 2v / (V - 1) - 1
    upper = (centred + half_bin) * inv_s  # standardised bin edges
    lower = (centred - half_bin) * inv_s
    # log(sigmoid(u) - sigmoid(l)) = log sigmoid(u) + log sigmoid(-l) + log(1 - exp(l - u)),
    # stable for every scale; l - u = -2d/s is the same for all bins.
    interior = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(-2 * half_bin * inv_s))
    # the edge bins reach to -inf (v = 0) and +inf (v = V - 1)
    return torch.where(values == 0, F.logsigmoid(upper),
                       torch.where(values == vocab_size - 1, F.logsigmoid(-lower), interior))


def _split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """params (..., 3K) -> log mixture weights, means, 1/scales, each (..., K)."""
    logit_pi, mean, log_scale = params.float().chunk(PARAMS_PER_COMPONENT, dim=-1)
    return F.log_softmax(logit_pi, dim=-1), mean, torch.exp(-log_scale.clamp(min=MIN_LOG_SCALE))


def mixture_log_probs(params: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """params (..., 3K): K mixture logits, K means, K log-scales -> log-masses (..., V)."""
    log_pi, mean, inv_s = _split(params)
    values = torch.arange(vocab_size, device=params.device, dtype=torch.float32)
    log_mass = _log_bin_mass(values, mean[..., None], inv_s[..., None], vocab_size)  # (..., K, V)
    return torch.logsumexp(log_pi[..., None] + log_mass, dim=-2)  # (..., V)


def mixture_nll(params: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """-log P(targets) (...) from params (..., 3K): only the observed bin, K evaluations per
    token instead of K * V, which is what makes training with this head affordable."""
    log_pi, mean, inv_s = _split(params)
    log_mass = _log_bin_mass(targets[..., None].float(), mean, inv_s, vocab_size)  # (..., K)
    return -torch.logsumexp(log_pi + log_mass, dim=-1)


class LogisticMixtureConfig(HeadConfig):
    n_mixtures: int = Field(5, ge=1, description="logistic components K")


class LogisticMixture(Head):
    name = "logistic_mixture"
    Config = LogisticMixtureConfig

    @classmethod
    def check_space(cls, space: ValueSpace, config: HeadConfig) -> list[str]:
        problems = super().check_space(space, config)
        if not problems and space.size < 2:
            problems.append(f"head 'logistic_mixture' needs at least 2 values, got {space.size}.")
        return problems

    @property
    def n_params(self) -> int:
        return PARAMS_PER_COMPONENT * self.config.n_mixtures

    def logits(self, params: torch.Tensor) -> torch.Tensor:
        return mixture_log_probs(params, self.space.size)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -mixture_nll(params, x, self.space.size)
