"""Stage 2 of tokar: autoregressive priors over token sequences."""

from priors.base import Prior, PriorConfig, StepOutput
from priors.gpt import GPT, GPTConfig
from priors.sampling import generate

__all__ = ["GPT", "GPTConfig", "Prior", "PriorConfig", "StepOutput", "generate"]
