"""Stage 2 of tokar: autoregressive priors over token sequences (a network body + a head)."""

from priors.base import Prior, PriorConfig, StepOutput
from priors.decoding import DecodeConfig, Generation
from priors.generate import generate
from priors.gpt import GPT, GPTConfig
from priors.heads import Head, HeadConfig
from priors.lstm import LSTM, LSTMConfig

__all__ = [
    "GPT", "LSTM", "DecodeConfig", "GPTConfig", "Generation", "Head", "HeadConfig", "LSTMConfig",
    "Prior", "PriorConfig", "StepOutput", "generate",
]
