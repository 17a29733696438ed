"""A linear layer whose integer products run on float32 BLAS: the fast primitive of the exact
coders (priors/integer.py explains why integer arithmetic makes pmfs portable).

float32 holds every integer below 2**24 exactly, so a float32 matrix product of small integers
is exact, in any summation order, on any BLAS, CPU kernel set or GPU (TF32 too: its 11-bit
significand holds the operands), while the sum stays below 2**24. With K inputs, activations
quantized to |a| <= 2**k and weights to |w| <= 2**(b - 1) - 1, that is K * 2**k * (2**(b-1) - 1)
< 2**24: 128 inputs leave k = 8, b = 10; 512 leave k = 7, b = 9 (`bits_for`). float32 BLAS runs
about twice as fast as the float64 products of `IntLinear`, whose 22-bit activations need them.

Activations are quantized per row, dynamically (as LLM.int8 and SmoothQuant do per token):
a = floor(x * 2**k / max|x| + 1/2), so every row uses its whole range; rows already within
2**k are taken as they are. `1 / max|x|` is a correctly rounded IEEE reciprocal and 2**k a power
of two, so the quantization is the same on every machine. The accumulator is brought back by
the row's max|x| (exact: below 2**47) and the column's multiplier (weight scale, gain, 2**-k).

`norm` folds a LayerNorm in front of the layer (LN's gamma into the weight's columns, beta
through the weight into the bias): the layer then normalizes its integer input itself, and the
per-row quantization absorbs LN's 1/sqrt(variance) into the row factor, so the normalized
vector is never materialized. Sums (mean, variance) run in float64 over integers: exact.

Outputs are integers in 2**-`out_frac` units, clipped to +-`clip`, as float32 (exact: clip is
below 2**24); everything after the matrix product is float32 IEEE arithmetic, the same on every
machine.

Not here: the float64 layers of the first coder format (`IntLinear`), tables, the coders.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from priors.integer import Primitive, check_bound

F32_EXACT = 2**24  # float32 holds every integer below this exactly


def bits_for(n_in: int) -> tuple[int, int]:
    """(k, b) for n_in inputs: |a| <= 2**k, |w| <= 2**(b - 1) - 1, n_in * 2**k * |w|max < 2**24;
    the weight gets the odd bit (per-row weights lose less than per-row activations)."""
    budget = 24 - math.ceil(math.log2(max(n_in, 2)))  # bits of |a| * |w|
    if budget < 12:
        raise ValueError(f"{n_in} inputs leave {budget} bits for float32-exact products")
    k = budget // 2
    return k, budget - k + 1


class QLinear(Primitive):
    """y = floor(W q(x) * row * m + b + 1/2), clipped, with q(x) the per-row quantized input (or
    of the normalized input, with `norm`): float32-exact products, float32 arithmetic after."""

    kind = "qlinear"

    @classmethod
    def quantize(cls, weight: torch.Tensor, bias: torch.Tensor | None, *, frac: int,
                 in_frac: int | None = None, out_frac: int | None = None, clip: int,
                 gain: float | torch.Tensor = 1.0,
                 norm: torch.nn.LayerNorm | None = None) -> QLinear:
        """Inputs in 2**-in_frac units, outputs in 2**-out_frac (both default `frac`); `gain`
        scales the outputs (a number or one per output)."""
        in_frac = frac if in_frac is None else in_frac
        w = weight.detach().double().cpu()  # (out, in)
        b = bias.detach().double().cpu() if bias is not None else torch.zeros(w.size(0),
                                                                               dtype=torch.float64)
        n_out, n_in = w.shape
        spec = {"clip": clip}
        if norm is not None:  # W LN(x) + b = (W diag(gamma)) n(x) + (W beta + b)
            if norm.bias is not None:
                b = b + w @ norm.bias.detach().double().cpu()
            if norm.weight is not None:
                w = w * norm.weight.detach().double().cpu()
            # n(x) = d sqrt(C) / sqrt(sum d**2 + eps C 2**(2 frac)) for d = x - mean in frac units
            spec["eps"] = max(1, round(norm.eps * n_in * 2.0 ** (2 * in_frac)))
            check_bound(n_in * (clip + 1) ** 2, 2**53, "normalized layer's variance")
            in_scale = math.sqrt(n_in)  # n(x) = d * sqrt(C) / r: the row factor carries 1 / r
        else:
            in_scale = 2.0 ** -in_frac
        k, bits = bits_for(n_in)
        qmax = 2 ** (bits - 1) - 1
        check_bound(n_in * 2**k * qmax, F32_EXACT, "float32 accumulator")
        amax = w.abs().amax(1)
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        out = 2.0 ** (frac if out_frac is None else out_frac)
        gain = torch.as_tensor(gain, dtype=torch.float64)
        # y (out units) = acc * row * mult, row = max|x| (or max|d| / r), and 2**-k undoes q
        mult = (scale * gain * in_scale * out * 2.0**-k).expand(n_out)
        # each multiplier as m * 2**-shift with 24-bit m: exactly a float32
        shift = [24 - math.frexp(float(v))[1] if v else 0 for v in mult]
        spec["k"] = k
        ints = {"weight": torch.round(w / scale[:, None]).to(torch.int16),
                "mult": torch.tensor([round(math.ldexp(float(v), s))
                                      for v, s in zip(mult, shift, strict=True)], dtype=torch.int32),
                "shift": torch.tensor(shift, dtype=torch.int32),
                "bias": torch.round(b * gain * out).clamp(-clip, clip).long()}
        return cls(spec, ints)

    def _prepare(self) -> None:
        self.weight_t = self.ints["weight"].float().t().contiguous()  # (in, out)
        mult = [math.ldexp(m, -s) for m, s in zip(self.ints["mult"].tolist(),
                                                  self.ints["shift"].tolist(), strict=True)]
        self.mult = torch.tensor(mult, dtype=torch.float32, device=self.weight_t.device)
        self.bias = self.ints["bias"].float()
        self.offset = self.bias + 0.5
        self.size = torch.full((1, 1), float(self.weight_t.size(0)), dtype=torch.float64,
                               device=self.weight_t.device)  # divisor tensor: a true division

    def __call__(self, x: torch.Tensor, rounded: bool = True) -> torch.Tensor:
        """Outputs (..., out) float32: integers clipped to +-clip, or with `rounded=False` the
        values before rounding (for a caller that quantizes them again, or floors them itself)."""
        if "eps" in self.spec:  # d = x - floor(mean) (exact in float32), r = sqrt(sum d**2 + eps)
            mean = x.sum(-1, keepdim=True, dtype=torch.float64).div_(self.size).floor_()
            x = x - mean.float()
            r = x.double().square_().sum(-1, keepdim=True).add_(self.spec["eps"]).sqrt_()
        q, amax = quantize_rows(x, self.spec["k"])
        acc = q @ self.weight_t  # exact: integers below 2**24
        row = (amax / r if "eps" in self.spec else amax).float()
        if not rounded:
            return acc.mul_(row).mul_(self.mult).add_(self.bias)
        clip = self.spec["clip"]
        return acc.mul_(row).mul_(self.mult).add_(self.offset).floor_().clamp_(-clip, clip)


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """float32 matrix products at full IEEE precision while coding: a user's
    `torch.set_float32_matmul_precision("medium")` lets oneDNN round operands to bfloat16 (on CPUs
    with bf16), which holds integers only up to 256, and the products would no longer be exact."""
    backends = (torch.backends.mkldnn.matmul, torch.backends.cuda.matmul)
    previous = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "ieee"
    try:
        yield
    finally:
        for b, p in zip(backends, previous, strict=True):
            b.fp32_precision = p


def quantize_rows(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, s): q = floor(x * 2**k / s + 1/2) as float32 integers, |q| <= 2**k, with the row scale
    s = max(max|x| over the last dim, 2**k) (keepdim, x's dtype), so x ~= q * s / 2**k. Rows
    already within 2**k are taken as they are (s = 2**k: a power of two, exact)."""
    s = x.abs().amax(-1, keepdim=True).clamp_(min=2.0**k)
    return (x * s.reciprocal().mul_(2.0**k)).add_(0.5).floor_().float(), s


def lookup(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[floor(index)] for a float `index` already clipped to [0, len(values) - 1]:
    index_select on int32 indices (int() truncates, a floor at >= 0), several times faster than
    advanced indexing."""
    return values.index_select(0, index.int().view(-1)).view(index.shape)

