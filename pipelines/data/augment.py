"""Perturbing training batches: token mutation, the background model of the likelihood ratio.

Ren et al. 2019 ("Likelihood Ratios for Out-of-Distribution Detection") train a *background*
model on inputs whose tokens are each replaced, with probability `mutate` (their mu, 0.1-0.3),
by a value drawn uniformly from the vocabulary, with L2 regularisation. Such a model learns the
population-level statistics of the data (a black background, the frequency of letters) but not
its semantics, so the ratio log p(x) - log p_background(x) cancels what both models share.

    data: {source: fashion_mnist, augment: {mutate: 0.2}}
    train: {weight_decay: 1.0e-4}          # the L2 of the paper (decoupled, AdamW)

Mutation is applied to training batches only (validation stays clean), after the batch is
drawn. Its randomness comes from a generator seeded by (train.seed, process, batch number),
never from the global RNG, so a resumed run mutates exactly the batches an uninterrupted one
would (exact resume holds) and every process of a launch perturbs its own shard differently.

Not here: perturbations of real-valued data (a mutation rate has no meaning without a finite
vocabulary: continuous tokenizers are a recipe error), adversarial or learned perturbations.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field


class AugmentConfig(BaseModel):
    """The recipe's `data.augment` section."""

    model_config = ConfigDict(extra="forbid")
    mutate: float = Field(0.0, ge=0.0, lt=1.0, description="probability that a training token is "
                          "replaced by a uniformly random id (Ren et al. 2019's background model)")


def mutate(ids: torch.Tensor, rate: float, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """`ids` with each position replaced, with probability `rate`, by an id drawn uniformly from
    [0, vocab_size) (which may equal the original, as in the paper). Drawn on the CPU from
    `generator`, so the result does not depend on the device."""
    shape = ids.shape
    hit = torch.rand(shape, generator=generator) < rate
    noise = torch.randint(0, vocab_size, shape, generator=generator)
    return torch.where(hit.to(ids.device), noise.to(ids.device, ids.dtype), ids)


class Mutation:
    """The batch transform the trainer applies: `mutation(batch, number)` -> perturbed batch,
    deterministic in (seed, process, number)."""

    def __init__(self, rate: float, vocab_size: int, seed: int, process_index: int = 0):
        if vocab_size < 2:
            raise ValueError(f"mutation needs a vocabulary of at least 2 ids, got {vocab_size}")
        self.rate, self.vocab_size = rate, vocab_size
        self.seed, self.process_index = seed, process_index

    def __call__(self, batch: dict[str, torch.Tensor], number: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.process_index * 7_919 + number) % (2**63 - 1))
        return {**batch, "ids": mutate(batch["ids"], self.rate, self.vocab_size, g)}
