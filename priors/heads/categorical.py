"""The categorical head: a softmax over the V values of a discrete position, the output of every
language model and of PixelCNN's 256-way pixel softmax. Its params are the V logits themselves,
so `logits` is free and the likelihood is the cross-entropy, taken in float32 whatever the
autocast dtype so that losses stay exact in mixed precision."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from priors.heads.base import Head


class Categorical(Head):
    name = "categorical"

    @property
    def n_params(self) -> int:
        return self.space.size

    def logits(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        flat = params.reshape(-1, params.size(-1)).float()
        return -F.cross_entropy(flat, x.reshape(-1), reduction="none").view(x.shape)
