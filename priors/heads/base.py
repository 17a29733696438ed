"""The Head contract: what a prior outputs at each position is a *distribution* over that
position's value, p(x_t | x_<t), and a head is that distribution's family.

The prior's network (its body) computes `n_params` numbers per position; the head turns them into
the distribution. A categorical head reads them as V logits, a Bernoulli head as one logit, the
discretized logistic mixture of PixelCNN++ as K (weight, mean, scale) triples, a Gaussian or a
mixture of Gaussians (Bishop's mixture density network) as means and scales of real values.
Everything that consumes the conditionals goes through the head:

- `log_prob(params, x)`: exact log-likelihood of each observed value, in nats. Training,
  evaluation, scoring, compression and anomaly detection all sum it. A head whose likelihood of
  one observed value is cheaper than all V log-masses (the mixture) computes just that.
- `sample(params, temperature, generator)`: one draw per position.
- discrete heads only: `logits(params)`, unnormalised log-masses of all V values (softmax gives
  the probabilities): what logits processors, beam search and speculative decoding work on;
  and `quantized_pmf` / `quantized_cdf`, integer frequencies that an entropy coder can use
  exactly, every value with a nonzero count.

Heads are stateless (no weights): the body owns every parameter, so a head can be swapped in a
recipe (`prior: {head: {name: gaussian_mixture, n_mixtures: 10}}`) without touching the body's
code. Third-party heads register through the `tokar_register_heads` hook.

Not here: heads with learned parameters of their own, autoregressive coupling of the D dims of a
continuous position (each head treats them as independent given the params, or jointly through
its mixture components).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from plugins.errors import LayoutError
from plugins.shared import ValueSpace

PMF_PRECISION = 16  # bits of the integer frequencies an entropy coder gets: totals of 2**16


class HeadConfig(BaseModel):
    """Base for head settings: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Head:
    """Base class of output distributions. Subclasses set `name`, `Config`, `continuous`, and
    implement `n_params`, `log_prob`, `sample`; discrete heads also `logits`."""

    name: ClassVar[str]
    Config: ClassVar[type[HeadConfig]] = HeadConfig
    continuous: ClassVar[bool] = False  # models real values (else token ids)

    def __init__(self, config: HeadConfig | None, space: ValueSpace):
        self.config = config if config is not None else self.Config()
        problems = self.check_space(space, self.config)
        if problems:
            raise LayoutError(" ".join(problems))
        self.space = space

    @classmethod
    def check_space(cls, space: ValueSpace, config: HeadConfig) -> list[str]:
        """Problems that stop this head from modelling values of `space` (empty if none)."""
        if space.continuous != cls.continuous:
            what = "real values" if space.continuous else "token ids"
            fits = "a continuous head (gaussian, gaussian_mixture)" if space.continuous else \
                "a discrete head (categorical, bernoulli for 2 values, logistic_mixture)"
            return [f"head '{cls.name}' models {'real values' if cls.continuous else 'token ids'}, "
                    f"but the tokenizer produces {what} ({space}); use {fits}."]
        return []

    # -- what subclasses provide ---------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Numbers the body must output per position."""
        raise NotImplementedError

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats, float32: params (..., n_params), x (...) ids or (..., D) reals."""
        logits = self.logits(params).float()
        return torch.log_softmax(logits, -1).gather(-1, x[..., None]).squeeze(-1)

    def sample(self, params: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One value per position: ids (...) or reals (..., D). temperature < 1 sharpens."""
        logits = self.logits(params).float() / temperature
        return draw(torch.softmax(logits, -1), generator)

    def logits(self, params: torch.Tensor) -> torch.Tensor:
        """Discrete heads: unnormalised log-masses (..., V) of every value."""
        raise NotImplementedError(f"head '{self.name}' is continuous: it has no per-value "
                                  "log-masses (no top-k, top-p, beam search or entropy coding).")

    # -- shared behaviour ------------------------------------------------------------------------
    def quantized_pmf(self, params: torch.Tensor, precision: int = PMF_PRECISION) -> torch.Tensor:
        """Integer frequencies (..., V) summing to 2**precision, every value at least 1: what an
        entropy coder needs, exactly reproducible from the same params (float64 arithmetic,
        ties to the first value)."""
        probs = torch.softmax(self.logits(params).double(), -1)
        V, total = probs.size(-1), 1 << precision
        if total // 2 < V:
            raise ValueError(f"{V} values need more than {precision} bits of precision")
        counts = torch.floor(probs * (total - V)).long() + 1  # the floor: no value ever gets 0
        rest = total - counts.sum(-1, keepdim=True)  # >= 0: the floors lost it
        top = probs.argmax(-1, keepdim=True)
        return counts.scatter_add(-1, top, rest)

    def quantized_cdf(self, params: torch.Tensor, precision: int = PMF_PRECISION) -> torch.Tensor:
        """cumsum of `quantized_pmf` with a leading 0: (..., V + 1), from 0 to 2**precision."""
        pmf = self.quantized_pmf(params, precision)
        return torch.cat([torch.zeros_like(pmf[..., :1]), pmf.cumsum(-1)], -1)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({settings})"


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of probabilities (..., V) -> (...), drawn where the generator lives.

    By inverting each row's cumulative distribution at one uniform number: a handful of
    vectorised ops, where torch.multinomial costs tens of microseconds per call on a CPU (a
    large share of a small prior's sampling step) and no host synchronisation on a GPU. The cdf
    is divided by its own last entry, which makes that entry exactly 1 > u: an index whose
    probability is 0 adds nothing to the cdf, so it is never drawn."""
    flat = probs.reshape(-1, probs.size(-1))
    device = generator.device if generator is not None else flat.device
    cdf = flat.to(device, torch.float32).cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    u = torch.rand(flat.size(0), 1, generator=generator, device=device)
    out = torch.searchsorted(cdf, u, right=True)  # the first index with cdf > u
    return out.to(flat.device).view(probs.shape[:-1])


def normal_noise(shape: torch.Size, like: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped `shape`, drawn where the generator lives, on like's device."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device)


def head_spec(spec: Any) -> tuple[str, dict[str, Any]]:
    """A recipe's `head:` value -> (name, settings): `categorical` or `{name: ..., **settings}`."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        settings = dict(spec)
        return settings.pop("name"), settings
    raise ValueError(f"a head is a registered name or {{name: ..., settings...}}, got {spec!r}")
