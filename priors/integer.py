"""Integer-exact inference: the coding step whose pmfs are bit-identical on every machine.

Arithmetic coding needs the encoder and the decoder to compute the *same* integer pmf at every
step. A prior's float forward does not give that across machines: BLAS kernels sum in different
orders, CPU kernel sets (ATEN_CPU_CAPABILITY=default, avx2, avx512), ARM and CUDA evaluate exp,
tanh and erf to different last bits, and one ulp can move a floor in `quantized_pmf`. An
`ExactCoder` is a prior re-expressed in fixed point, following integer-arithmetic-only inference
(Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference") and I-BERT (Kim et al. 2021: integer GELU, softmax and
LayerNorm), for the purpose of ts_zip (Bellard): evaluation that is deterministic by construction.

Why the arithmetic below is exact anywhere, yet runs on PyTorch's ordinary kernels:
- Every reduction (matmul, sum) runs over integer-valued float64 tensors, or int64 ones, whose
  partial sums stay below 2**53: integer sums of that size are exact in float64, so any order,
  blocking, FMA or BLAS gives the same result. float64 has no TF32 mode on GPUs.
  Magnitudes are bounded by construction: every activation is clipped to |x| <= `clip`, weights
  to |w| <= 2**(weight_bits - 1) - 1, and each primitive checks its worst case when it is built.
- Elementwise + - * / and sqrt on float64 are correctly rounded by IEEE 754 on every CPU and GPU,
  so `floor(acc * multiplier + bias)` requantization is deterministic even where it rounds.
  Divisions are by tensors or by powers of two only: CUDA divides by a scalar as a multiplication
  by its reciprocal, which is exact for powers of two alone.
- No transcendental kernel (exp, tanh, sigmoid, erf, log) ever runs: nonlinearities are integer
  lookup tables over a clipped fixed-point grid, built once at export with Python's `decimal`
  (software arithmetic, the same digits everywhere) and stored with the coder.

Number formats: an activation is an integer x meaning x / 2**frac (frac = 12 by default). A linear
layer's weights are quantized per output row (w ~= q * scale_row, |q| < 2**(weight_bits - 1));
its integer accumulator is brought back to activation units by a per-row multiplier
m_row / 2**shift. Tables map a grid of step 2**-table_frac to values in 2**-out_frac units.
The output pmf is `softmax_pmf`: an exp table, then the integer normalisation of
`Head.quantized_pmf` (floor share of total - V, plus 1, the remainder to the first maximum).

A coder is a flat dict of named primitives (IntLinear, IntLayerNorm, IntEmbedding, Table), each a
few integer tensors plus a JSON spec; `ExactCoder.tensors()` / `config()` / `from_saved` save and
rebuild any coder from them alone, with no float prior (a frozen codec). Subclasses
(priors/gpt_exact.py, priors/lstm_exact.py) wire the primitives into their network.

Faster products: priors/qlinear.py quantizes activations per row to 8-9 bits so that float32
BLAS (twice float64's speed) is exact too; the GPT's coder uses it (coder format 2).

Not here: integer-only training or fine-tuning (quantization-aware training), sub-8-bit weights,
int8 GEMM kernels (torch's CPU int8 products are far slower than float32 BLAS), continuous heads
(gaussian, logistic mixtures), sampling (coders only give pmfs; sampling uses the float prior).
"""

from __future__ import annotations

import decimal
import functools
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from plugins.errors import CheckpointError, CompressionError
from plugins.shared import read_config, write_config
from priors.heads.base import PMF_PRECISION

if TYPE_CHECKING:
    from priors.base import Prior

EXACT = 2**53  # float64 holds every integer below this exactly
CODER_WEIGHTS = "coder.safetensors"
CODED_HEADS = ("categorical", "bernoulli")


def check_bound(bound: int, limit: int, what: str) -> None:
    """Export-time guard of a worst-case magnitude (an internal invariant, not a user error)."""
    assert bound < limit, f"{what}: worst case {bound} reaches {limit}; lower clip or weight_bits"


def _pow2(n: int) -> float:
    return math.ldexp(1.0, n)  # exact: 2**n as a float, negative n included


# -- primitives -------------------------------------------------------------------------------
PRIMITIVES: dict[str, type[Primitive]] = {}  # kind -> class, what a saved coder names


class Primitive:
    """A piece of an integer network: integer tensors (`ints`, what is saved) and a JSON spec of
    numbers (`spec`); `_prepare` derives the float tensors the arithmetic runs on. Each subclass
    registers its `kind`, the name a saved coder gives it."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # a subclass that names a kind of its own
            assert cls.kind not in PRIMITIVES, f"two primitives of kind {cls.kind!r}"
            PRIMITIVES[cls.kind] = cls

    def __init__(self, spec: dict[str, Any], ints: dict[str, torch.Tensor]):
        self.spec = dict(spec)
        self.ints = dict(ints)
        self._prepare()

    def _prepare(self) -> None:
        pass

    def to(self, device: torch.device | str) -> Primitive:
        self.ints = {k: v.to(device) for k, v in self.ints.items()}
        self._prepare()
        return self


class IntEmbedding(Primitive):
    """Rows of fixed-point vectors (token and position embeddings, start and class vectors):
    round(w * 2**frac), looked up by index."""

    kind = "embedding"

    @classmethod
    def quantize(cls, weight: torch.Tensor, frac: int, clip: int) -> IntEmbedding:
        w = torch.round(weight.detach().double().cpu() * _pow2(frac)).clamp(-clip, clip)
        return cls({}, {"weight": w.int()})  # |w| <= clip < 2**31

    def _prepare(self) -> None:
        self.weight = self.ints["weight"].double()

    def __call__(self, index: torch.Tensor | int) -> torch.Tensor:
        return self.weight[index]


class IntLinear(Primitive):
    """y = floor(x @ q.T * m / 2**shift + b + 1/2), clipped: a linear layer with weights quantized
    per output row (Jacob et al. 2018, with a per-channel scale). `m / 2**shift` folds the row
    scale and any fixed gain (attention's 1/sqrt(head size)); activations keep `frac` bits."""

    kind = "linear"

    @classmethod
    def quantize(cls, weight: torch.Tensor, bias: torch.Tensor | None, *, bits: int, frac: int,
                 clip: int, gain: float | torch.Tensor = 1.0) -> IntLinear:
        w = weight.detach().double().cpu()  # (out, in)
        qmax = 2 ** (bits - 1) - 1
        check_bound(w.size(1) * clip * qmax, EXACT, "linear accumulator")
        amax = w.abs().amax(1)
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        q = torch.round(w / scale[:, None])
        gain = torch.as_tensor(gain, dtype=torch.float64)  # a number, or one per output row
        mult = scale * gain
        # a shift that gives the largest multiplier 31 bits: ~1e-9 relative precision
        shift = 30 - math.frexp(float(mult.abs().max()))[1] + 1
        ints = {"weight": q.to(torch.int16 if bits <= 16 else torch.int32),
                "mult": torch.round(mult * _pow2(shift)).long()}
        if bias is not None:
            ints["bias"] = torch.round(bias.detach().double().cpu() * gain * _pow2(frac)).long()
        return cls({"shift": shift, "clip": clip}, ints)

    def _prepare(self) -> None:
        self.weight_t = self.ints["weight"].double().t()  # (in, out)
        self.mult = self.ints["mult"].double() * _pow2(-self.spec["shift"])  # exact: a power of 2
        bias = self.ints.get("bias")
        self.offset = (bias.double() if bias is not None else torch.zeros_like(self.mult)) + 0.5

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        acc = x @ self.weight_t  # exact: integers, |acc| < 2**53 (checked at export)
        clip = self.spec["clip"]
        return acc.mul_(self.mult).add_(self.offset).floor_().clamp_(-clip, clip)


class IntLayerNorm(Primitive):
    """LayerNorm in integers (I-BERT's idea, with IEEE sqrt instead of an integer Newton loop:
    sqrt is correctly rounded everywhere). With d = x - floor(mean(x)) in int64 (exact in any
    order), y = floor(d * g / sqrt(sum(d**2) + eps) + b + 1/2) where g = gamma * sqrt(C) * 2**frac
    and eps = eps * C * 2**(2 frac): the same as (x - mean) / sqrt(var + eps) * gamma + beta."""

    kind = "layernorm"

    @classmethod
    def quantize(cls, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, *,
                 size: int, frac: int, clip: int) -> IntLayerNorm:
        check_bound(size * (2 * clip + 1) ** 2, 2**63, "layernorm variance (int64)")
        gamma = (weight.detach().double().cpu() if weight is not None
                 else torch.ones(size, dtype=torch.float64))
        ints = {"weight": torch.round(gamma * math.sqrt(size) * _pow2(frac)).long()}
        if bias is not None:
            ints["bias"] = torch.round(bias.detach().double().cpu() * _pow2(frac)).long()
        return cls({"eps": max(1, round(eps * size * _pow2(2 * frac))), "clip": clip}, ints)

    def _prepare(self) -> None:
        self.gain = self.ints["weight"].double()
        bias = self.ints.get("bias")
        self.offset = (bias.double() if bias is not None else torch.zeros_like(self.gain)) + 0.5

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xi = x.long()
        mean = torch.div(xi.sum(-1, keepdim=True), xi.size(-1), rounding_mode="floor")
        d = xi - mean
        var = (d * d).sum(-1, keepdim=True).double()  # int64 sum: exact; the cast rounds alike
        r = (var + self.spec["eps"]).sqrt_()
        clip = self.spec["clip"]
        return (d.double().mul_(self.gain).div_(r).add_(self.offset).floor_()
                .clamp_(-clip, clip))


class Table(Primitive):
    """A nonlinearity as a lookup table: entry k is round(f(x_k) * 2**out_frac) at
    x_k = (lo + k) / 2**table_frac. Inputs (in `frac` bits) are rounded to the grid and clipped to
    its ends, so the ends must be where f has saturated (or be the intended value beyond)."""

    kind = "table"
    FUNCTIONS = ("exp_neg", "sigmoid", "tanh", "normal_cdf")

    @classmethod
    def build(cls, fn: str, x_lo: float, x_hi: float, *, frac: int, table_frac: int = 10,
              out_frac: int = 16) -> Table:
        assert fn in cls.FUNCTIONS
        table_frac = min(table_frac, frac)  # no finer than the inputs
        lo, hi = math.floor(x_lo * 2**table_frac), math.ceil(x_hi * 2**table_frac)
        values = _table_values(fn, lo, hi - lo + 1, table_frac, out_frac)
        spec = {"fn": fn, "lo": lo, "table_frac": table_frac, "frac": frac,
                "out_frac": out_frac}
        assert max(map(abs, values)) < 2**31
        return cls(spec, {"values": torch.tensor(values, dtype=torch.int32)})

    def _prepare(self) -> None:
        self.values = self.ints["values"].double()
        self.values32 = self.ints["values"].float()  # exact for the tables below 2**24
        self.step = _pow2(self.spec["table_frac"] - self.spec["frac"])  # exact power of 2
        self.last = self.values.numel() - 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        index = (x * self.step).add_(0.5).floor_().sub_(self.spec["lo"]).clamp_(0, self.last)
        return self.values[index.long()]


@functools.lru_cache(maxsize=32)
def _table_values(fn: str, lo: int, n: int, table_frac: int, out_frac: int) -> tuple[int, ...]:
    """round(f(x) * 2**out_frac) on the grid x = (lo + k) / 2**table_frac, in `decimal` at 32
    digits: software arithmetic, so every machine computes the same table. exp comes from one
    correctly rounded Decimal.exp and a running product along the grid (cheap, and 32 digits
    leave far more than the 2**-24 the tables keep)."""
    out = []
    with decimal.localcontext() as ctx:
        ctx.prec = 32
        D = decimal.Decimal
        h = D(1) / D(2**table_frac)
        x0 = D(lo) * h
        scale = D(2**out_frac)
        if fn in ("exp_neg", "sigmoid", "tanh"):
            k = 2 if fn == "tanh" else 1  # tanh(x) = (1 - e^-2x) / (1 + e^-2x)
            e, q = (-k * x0).exp(), (-k * h).exp()
            for _ in range(n):
                v = e if fn == "exp_neg" else 1 / (1 + e) if fn == "sigmoid" else (1 - e) / (1 + e)
                out.append(v)
                e *= q
        else:  # Phi(x) = 1/2 + pdf(x) * sum_n x^(2n+1) / (1 * 3 * ... * (2n+1)): no cancellation
            inv_sqrt_2pi = 1 / (2 * _pi()).sqrt()
            half = {}  # Phi(x) - 1/2 is odd in x: each |x| once
            for i in range(n):
                m = abs(lo + i)
                if m not in half:
                    x = m * h
                    term, total, j, x2 = x, x, 1, x * x
                    while term > D(10) ** -25 * total:
                        j += 2
                        term = term * x2 / j
                        total += term
                    half[m] = (-x2 / 2).exp() * inv_sqrt_2pi * total
                out.append(D(1) / 2 + (half[m] if lo + i >= 0 else -half[m]))
        return tuple(int((v * scale).to_integral_value(decimal.ROUND_HALF_EVEN)) for v in out)


def _pi() -> decimal.Decimal:
    """pi to the context's precision (Machin's formula), not math.pi's 53 bits."""
    D = decimal.Decimal

    def arctan_inv(n: int) -> decimal.Decimal:
        x, n2, total, k, sign = D(1) / n, n * n, D(0), 1, 1
        term = x
        while term > D(10) ** -45:
            total += sign * term / k
            term /= n2
            k += 2
            sign = -sign
        return total

    return 4 * (4 * arctan_inv(5) - arctan_inv(239))


# -- composite operations ----------------------------------------------------------------------
def exp_table(out_frac: int, *, frac: int, table_frac: int = 10) -> Table:
    """exp(-d) for d >= 0, up to where it rounds to 0 at out_frac bits (the clipped tail is 0)."""
    return Table.build("exp_neg", 0.0, (out_frac + 1) * math.log(2), frac=frac,
                       table_frac=table_frac, out_frac=out_frac)


def softmax_pmf(z: torch.Tensor, exp: Table, precision: int = PMF_PRECISION) -> torch.Tensor:
    """Integer logits (..., V) -> integer pmf (..., V) int64 summing to 2**precision, every value
    >= 1: e = exp table of (max - z), then the floor share of (total - V) plus 1, and what the
    floors left to the first maximum. All int64 after the table: exact everywhere."""
    V, total = z.size(-1), 1 << precision
    if total // 2 < V:
        raise ValueError(f"{V} values need more than {precision} bits of precision")
    check_bound(2 ** exp.spec["out_frac"] * total, 2**63, "pmf numerator (int64)")
    e = exp(z.amax(-1, keepdim=True) - z).long()  # (..., V), the maximum gets 2**out_frac > 0
    counts = torch.div(e * (total - V), e.sum(-1, keepdim=True), rounding_mode="floor") + 1
    rest = total - counts.sum(-1, keepdim=True)
    index = torch.arange(V, device=z.device).expand_as(e)
    top = torch.where(e == e.amax(-1, keepdim=True), index, V).amin(-1, keepdim=True)
    return counts.scatter_add_(-1, top, rest)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, exp: Table,
              frac: int) -> torch.Tensor:
    """softmax(q k^T) v for integer q (..., 1, hs) and cached k, v (..., T, hs), all in `frac`
    bits, with 1/sqrt(hs) already folded into q: scores floor(q.k / 2**frac), weights from the exp
    table (out_frac bits), and the weighted mean floor(sum_t w_t v_t / sum_t w_t)."""
    s = torch.matmul(q, k.transpose(-1, -2)).mul_(_pow2(-frac)).floor_()  # (..., 1, T)
    w = exp(s.amax(-1, keepdim=True) - s)
    return torch.matmul(w, v).div_(w.sum(-1, keepdim=True)).floor_()


def gelu(x: torch.Tensor, cdf: Table) -> torch.Tensor:
    """GELU(x) = x * Phi(x) (Hendrycks & Gimpel 2016), Phi from a normal-cdf table."""
    return (x * cdf(x)).mul_(_pow2(-cdf.spec["out_frac"])).floor_()


def mul_fixed(a: torch.Tensor, b: torch.Tensor, shift: int) -> torch.Tensor:
    """floor(a * b / 2**shift): the product of two fixed-point numbers, brought back to one
    format (exact while |a * b| < 2**53)."""
    return (a * b).mul_(_pow2(-shift)).floor_()


# -- the coder contract ---------------------------------------------------------------------------
class ExactCoder(ABC):
    """A prior's coding step in integer arithmetic: the same integer pmfs on every machine.

    `init_state(B, cond)` gives the pmf (B, V) int64 of position 0 and a state; `step(state,
    ids)` feeds one token per row, ids (B,) int64, and gives the pmf of the next position. Every
    pmf sums to 2**16 with every value >= 1. `max_block_length`: the most tokens one state can
    code (init_state's position plus max_block_length - 1 steps); a caller codes longer
    sequences in blocks of at most that many tokens, each from a fresh init_state. None:
    unbounded (recurrent priors, a GPT's sliding window). `default_block_length`: the block
    length a caller uses when its user names none (None: the caller's own default).

    A coder is `settings` (JSON) plus named primitives; subclasses build them from a float
    prior in `from_prior` and wire them in `init_state` / `step`."""

    prior_name: ClassVar[str]
    format_version: ClassVar[int] = 1

    def __init__(self, settings: dict[str, Any], modules: dict[str, Primitive]):
        self.settings = dict(settings)
        self.modules = dict(modules)
        self.vocab_size: int = int(settings["vocab_size"])
        self.num_classes: int = int(settings.get("num_classes", 0))
        self.head: str = settings.get("head", "categorical")
        self.device = torch.device("cpu")

    @property
    def max_block_length(self) -> int | None:
        return None

    @property
    def default_block_length(self) -> int | None:
        return None

    def state_bytes_per_block(self) -> int | None:
        """Bytes of coding state per block (row of a batch), or None when small or unknown:
        the default batch size fits a memory budget with it."""
        return None

    # -- what subclasses provide ---------------------------------------------------------------
    @classmethod
    @abstractmethod
    def from_prior(cls, prior: Prior) -> ExactCoder:
        """Quantize a float prior's weights and build the tables."""

    @abstractmethod
    def init_state(self, batch_size: int,
                   cond: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """The pmf (B, V) int64 of position 0, and the coding state."""

    @abstractmethod
    def step(self, state: Any, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Feed ids (B,) int64: the pmf (B, V) of the next position, and the new state (which
        may be the old one updated in place)."""

    # -- shared ------------------------------------------------------------------------------------
    def pmf(self, z: torch.Tensor) -> torch.Tensor:
        """The head's integer pmf from integer outputs z (B, n_params): V logits, or Bernoulli's
        one logit l read as the logits (0, l) (softmax of those is (1 - sigmoid(l), sigmoid(l)))."""
        if self.head == "bernoulli":
            z = torch.cat([torch.zeros_like(z), z], -1)
        return softmax_pmf(z, self.modules["exp_pmf"])

    def class_ids(self, batch_size: int, cond: torch.Tensor | None) -> torch.Tensor | None:
        """Validated class labels (B,) on this coder's device, or None when unconditional."""
        if not self.num_classes:
            return None
        if cond is None:
            raise CompressionError(f"this coder is class-conditional ({self.num_classes} "
                                   "classes): pass cond, the class labels")
        cond = cond.reshape(batch_size).to(self.device, torch.long)
        if bool(((cond < 0) | (cond >= self.num_classes)).any()):
            raise CompressionError(f"class labels must lie in [0, {self.num_classes}), got "
                                   f"{cond.tolist()}")
        return cond

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": t for name, m in self.modules.items() for key, t in m.ints.items()}

    def config(self) -> dict[str, Any]:
        return {"prior": self.prior_name, "format_version": self.format_version,
                "settings": self.settings,
                "modules": {name: {"kind": m.kind, **m.spec} for name, m in self.modules.items()}}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                   device: torch.device | str = "cpu") -> ExactCoder:
        if config.get("prior") != cls.prior_name:
            raise CheckpointError(f"this exact coder was exported from prior "
                                  f"'{config.get('prior')}', not '{cls.prior_name}'")
        try:
            modules = {}
            for name, spec in config["modules"].items():
                spec = dict(spec)
                kind = PRIMITIVES[spec.pop("kind")]
                ints = {k[len(name) + 1:]: t for k, t in tensors.items()
                        if k.startswith(name + ".") and "." not in k[len(name) + 1:]}
                modules[name] = kind(spec, ints)
            coder = cls(config["settings"], modules)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"a saved '{cls.prior_name}' exact coder is incomplete or "
                                  f"corrupt ({type(exc).__name__}: {exc})") from exc
        return coder.to(device)

    def to(self, device: torch.device | str) -> ExactCoder:
        self.device = torch.device(device)
        for m in self.modules.values():
            m.to(self.device)
        return self


def coded_head(prior: Prior) -> str:
    """The head name of a prior an exact coder can code, or a one-line refusal."""
    name = prior.distribution.name
    if name not in CODED_HEADS:
        raise CompressionError(f"prior '{prior.name}' has a '{name}' head; the portable "
                               "(integer-exact) coding step codes categorical and bernoulli heads "
                               "only: compress with --no-portable.")
    return name


def save_coder(coder: ExactCoder, directory: str | Path) -> Path:
    """config.json + coder.safetensors in `directory` (the caller makes the write atomic)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_config(directory, coder.config())
    save_file({k: v.detach().cpu().contiguous() for k, v in coder.tensors().items()},
              str(directory / CODER_WEIGHTS))
    return directory


def load_coder(directory: str | Path, coder_class: type[ExactCoder],
               device: torch.device | str = "cpu") -> ExactCoder:
    """A coder saved by `save_coder`, rebuilt with no float prior."""
    directory = Path(directory)
    config = read_config(directory, "exact coder", coder_class.format_version)
    path = directory / CODER_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"exact coder weights {path} are missing.")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__}: "
                              f"{exc}).") from exc
    return coder_class.from_saved(config, tensors, device)
