"""Reduced-precision weights for CPU inference.

- "bf16": every weight in bfloat16 (half the bytes; a win where the CPU has native bf16 math).
- "int8": PyTorch's dynamic quantization of every nn.Linear (weights stored as int8, activations
  quantized on the fly per batch; fbgemm kernels). Embeddings and norms stay fp32. The tied
  output head is quantized as its own copy.
Both are inference-only: a quantized prior cannot be trained or saved back.
"""

from __future__ import annotations

import torch
from torch import nn

from priors.base import Prior

PRECISIONS = ("fp32", "bf16", "int8")


def to_precision(prior: Prior, precision: str) -> Prior:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    prior.eval()
    if precision == "bf16":
        return prior.to(torch.bfloat16)
    if precision == "int8":
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(prior, {nn.Linear}, dtype=torch.qint8)
    return prior
