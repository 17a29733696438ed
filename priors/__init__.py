"""Stage 2 of tokar: autoregressive priors over token sequences."""

from priors.base import Prior, PriorConfig, StepOutput
from priors.gpt import GPT, GPTConfig
from priors.lstm import LSTM, LSTMConfig
from priors.sampling import DecodeConfig, Generation, generate

__all__ = [
    "GPT", "LSTM", "DecodeConfig", "GPTConfig", "Generation", "LSTMConfig", "Prior",
    "PriorConfig", "StepOutput", "generate",
]
