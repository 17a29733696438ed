"""Scheduled sampling (Bengio, Vinyals, Jaitly & Shazeer 2015, "Scheduled Sampling for Sequence
Prediction with Recurrent Neural Networks"): a remedy for exposure bias.

Teacher forcing trains p(x_t | x_<t) on ground-truth histories only, but generation feeds the
model its own samples, histories it never saw in training. Scheduled sampling closes the gap
gradually: during training, with probability p(step), the input at position t (the history
entry x_{t-1}) is the model's own sample instead of the ground truth, while the target stays the
ground truth. p rises over training (Bengio et al. decay the ground-truth probability
eps = 1 - p):

    constant:         p = max_p
    linear:           p = max_p * min(1, i / ramp_steps)
    exponential:      p = max_p * (1 - k^i)                   (0 < k < 1; default 0.999)
    inverse_sigmoid:  p = max_p * (1 - k / (k + exp(i / k)))  (k >= 1; default 500)

with i the optimizer steps since `start_step` (p = 0 before it). Two forms:

- `sequential` (the paper's, for recurrent priors): decode the batch position by position through
  `init_state` / `step` with gradients, drawing each position's sample from the params just
  computed, so a sampled token shapes the samples after it. One step per position: slower.
- `two_pass` (Mihaylova & Martins 2019, "Scheduled Sampling for Transformers"; the form for any
  prior that scores all positions at once): a teacher-forced pass without gradients gives every
  position's params, one sample is drawn per position, inputs are mixed with the ground truth,
  and a second pass on the mixed inputs is trained.

`form: auto` picks sequential for the recurrent priors (lstm, rnn) in a single process and
two_pass otherwise (a multi-process run must call the model through its DDP wrapper). The coins
and samples come from a generator seeded by (seed, micro-batch, process), never the global random
state, so runs resume exactly; p = 0 is teacher forcing itself, bit for bit.

Not here: annealing by validation loss, sampling with top-k inside the schedule, mixing
probabilities per position (the paper's "soft" argmax variants).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from plugins.errors import TokarError
from priors.base import Prior
from priors.likelihood import nll, token_nll
from priors.lstm import LSTM


class ScheduledSamplingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schedule: Literal["constant", "linear", "exponential", "inverse_sigmoid"] = "linear"
    max_p: float = Field(0.25, ge=0.0, le=1.0, description="highest probability of feeding a sample")
    start_step: int = Field(0, ge=0, description="teacher forcing before this optimizer step")
    ramp_steps: int = Field(1000, ge=1, description="linear: steps from p = 0 to max_p")
    k: float | None = Field(None, gt=0, description="exponential (0 < k < 1) or inverse_sigmoid "
                            "(k >= 1) decay; default 0.999 / 500")
    form: Literal["auto", "sequential", "two_pass"] = "auto"
    temperature: float = Field(1.0, gt=0, description="of the model's samples")

    @model_validator(mode="after")
    def _check_k(self) -> ScheduledSamplingConfig:
        if self.k is not None and self.schedule == "exponential" and not self.k < 1:
            raise ValueError(f"the exponential schedule needs 0 < k < 1, got k={self.k}")
        if self.k is not None and self.schedule == "inverse_sigmoid" and self.k < 1:
            raise ValueError(f"the inverse_sigmoid schedule needs k >= 1, got k={self.k}")
        return self


def sample_probability(config: ScheduledSamplingConfig, step: int) -> float:
    """p(step): the probability that an input is the model's own sample."""
    i = step - config.start_step
    if i < 0 or config.max_p == 0:
        return 0.0
    if config.schedule == "constant":
        share = 1.0
    elif config.schedule == "linear":
        share = min(1.0, i / config.ramp_steps)
    elif config.schedule == "exponential":
        share = 1.0 - (config.k or 0.999) ** i
    else:
        k = config.k or 500.0
        share = 1.0 - k / (k + math.exp(min(i / k, 700.0)))
    return config.max_p * share


class ScheduledSampling:
    """The training loss under a schedule: `token_nll(model, prior, ids, cond, step, batch)`."""

    def __init__(self, config: ScheduledSamplingConfig, prior: Prior, num_processes: int = 1,
                 seed: int = 0, process_index: int = 0):
        form = config.form
        if form == "auto":
            form = "sequential" if isinstance(prior, LSTM) and num_processes == 1 else "two_pass"
        if form == "sequential" and num_processes > 1:
            raise TokarError("train.scheduled_sampling.form=sequential steps the prior outside its "
                             "DDP wrapper, which works in one process only; use form: two_pass "
                             "for multi-process training.")
        self.config, self.form = config, form
        self.seed, self.process_index = seed, process_index

    def token_nll(self, model: torch.nn.Module, prior: Prior, ids: torch.Tensor,
                  cond: torch.Tensor | None, step: int, batch: int) -> torch.Tensor:
        """Per-position NLL (B, T) of the ground truth, inputs mixed with the model's samples
        with probability p(step). `batch` numbers the micro-batch (seeds its randomness)."""
        p = sample_probability(self.config, step)
        if p == 0.0:  # teacher forcing itself, untouched
            return token_nll(model, prior, ids, cond)
        g = torch.Generator(device=ids.device)
        g.manual_seed((self.seed * 1_000_003 + batch) * 1_009 + self.process_index)
        if self.form == "sequential":
            return self._sequential(prior, ids, cond, p, g)
        return self._two_pass(model, prior, ids, cond, p, g)

    def _mix(self, truth: torch.Tensor, guess: torch.Tensor, p: float, g: torch.Generator,
             continuous: bool) -> torch.Tensor:
        coin = torch.rand(truth.shape[:2], generator=g, device=truth.device) < p  # (B, T) or (B, 1)
        return torch.where(coin[..., None] if continuous else coin, guess.to(truth.dtype), truth)

    def _two_pass(self, model, prior: Prior, ids, cond, p, g) -> torch.Tensor:
        head = prior.distribution
        with torch.no_grad():
            guess = head.sample(model(ids, cond), self.config.temperature, g)  # (B, T[, D])
        mixed = self._mix(ids, guess, p, g, head.continuous)
        return nll(prior, model(mixed, cond), ids)

    def _sequential(self, prior: Prior, ids, cond, p, g) -> torch.Tensor:
        head, T = prior.distribution, ids.size(1)
        params, state = prior.init_state(ids.size(0), cond)
        outs = [params]
        for t in range(T - 1):
            with torch.no_grad():
                guess = head.sample(params, self.config.temperature, g)[:, None]  # (B, 1[, D])
            x = self._mix(ids[:, t : t + 1], guess, p, g, head.continuous)
            step, state = prior.step(state, x)
            params = step[:, -1]
            outs.append(params)
        return nll(prior, torch.stack(outs, 1), ids)
