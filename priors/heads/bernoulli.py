"""The Bernoulli head: binary values (binarized images, bits) with one logit per position,
p(x = 1) = sigmoid(l), the output of FVSBN, NADE and MADE on binarized MNIST. Half the outputs of
a 2-way softmax, and the same distribution family."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plugins.shared import ValueSpace
from priors.heads.base import Head, HeadConfig


class Bernoulli(Head):
    name = "bernoulli"

    @classmethod
    def check_space(cls, space: ValueSpace, config: HeadConfig) -> list[str]:
        problems = super().check_space(space, config)
        if not problems and space.size != 2:
            problems.append(f"head 'bernoulli' models binary values, but the tokenizer has "
                            f"{space.size} values; use 'categorical' or 'logistic_mixture', or "
                            "binarize the data (pixel tokenizer levels: 2).")
        return problems

    @property
    def n_params(self) -> int:
        return 1

    def logits(self, params: torch.Tensor) -> torch.Tensor:
        logit = params.float()  # (..., 1)
        return torch.cat([F.logsigmoid(-logit), F.logsigmoid(logit)], -1)  # (..., 2)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logit = params[..., 0].float()
        return -F.binary_cross_entropy_with_logits(logit, x.float(), reduction="none")
