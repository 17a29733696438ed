"""Linear layers for decoding a few rows at a time on CPU, with the weights packed once for
oneDNN's matrix-product kernels.

Decoding multiplies the same weight matrices by a handful of rows, over and over: a
speculative-decoding verification pass (k + 1 positions of one sequence), a small batch of
sequences. There, oneDNN's product with the weights reordered once ahead into its own layout
(the way inductor's freezing prepares CPU weights) measured faster than PyTorch's default
(MKL, as the project's CPU wheels are built): 1.26-1.47x at 2 to 9 rows on an AVX2 EPYC, 1.17x
at 16, within 5% at 32 and 64, and 0.88x at one row, a matrix-vector product
(benchmarks/packed_linear.py). So `linear` takes the packed path at 2 to 16 rows only, and only
when nothing needs gradients.

A packed copy is kept per nn.Linear and made again whenever the weight is replaced or changed
in place (another tensor, or its version counter moved), so a run that trains, then samples,
then trains on never decodes with stale weights. It costs one more copy of the weights.
Where oneDNN is not built in, or refuses a layout, the default product runs.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

PACKED_ROWS = range(2, 17)  # rows where packing measured faster (benchmarks/packed_linear.py)
_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# layer -> (its weight, the weight's version, the packed copy). Kept off the module: an opaque
# oneDNN tensor cannot be deep-copied or pickled, and a layer that is collected takes its entry.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def packs(x: torch.Tensor, layer: nn.Linear) -> bool:
    """Whether `linear` takes the packed path for this input: 2 to 16 rows, fp32 on the CPU,
    no gradient wanted, oneDNN built in."""
    if not _AVAILABLE or torch.compiler.is_compiling():  # a compiled graph picks its own kernels
        return False
    rows = x.numel() // x.size(-1) if x.size(-1) else 0
    return (rows in PACKED_ROWS and not torch.is_grad_enabled()
            and x.device.type == "cpu" and x.dtype == layer.weight.dtype == torch.float32)


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """layer(x) for a plain nn.Linear, through oneDNN's packed weights where `packs` says so."""
    w = layer.weight
    if not packs(x, layer):
        return F.linear(x, w, layer.bias)
    cached = _PACKED.get(layer)
    if cached is None or cached[0]() is not w or cached[1] != w._version:
        try:
            cached = (weakref.ref(w), w._version, torch.ops.mkldnn._reorder_linear_weight(w.detach(), None))
        except RuntimeError:  # a layout oneDNN does not take: the default product
            return F.linear(x, w, layer.bias)
        _PACKED[layer] = cached
    return torch.ops.mkldnn._linear_pointwise(x, cached[2], layer.bias, "none", [], "")
