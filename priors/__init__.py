"""Stage 2 of tokar: autoregressive priors over token sequences."""

from priors.base import Prior, PriorConfig, StepOutput
from priors.gpt import GPT, GPTConfig
from priors.sampling import DecodeConfig, Generation, generate

__all__ = ["GPT", "DecodeConfig", "GPTConfig", "Generation", "Prior", "PriorConfig", "StepOutput",
           "generate"]
