"""QLinear (priors/qlinear.py): float32 products that are exact at their worst case, outputs close
to the float layer's, and a folded LayerNorm that matches LayerNorm then Linear."""

from __future__ import annotations

import pytest
import torch

from priors.qlinear import F32_EXACT, QLinear, bits_for, ieee_float32

FRAC, CLIP = 12, 2**22


@pytest.mark.parametrize("n_in", [16, 128, 512, 2048])
def test_the_worst_case_accumulator_is_exact_in_float32(n_in):
    k, bits = bits_for(n_in)
    worst = n_in * 2**k * (2 ** (bits - 1) - 1)
    assert worst < F32_EXACT <= 2 * worst  # the whole budget used, never more
    layer = QLinear.quantize(torch.ones(3, n_in), None, frac=FRAC, clip=CLIP)
    assert int(layer.ints["weight"].max()) == 2 ** (bits - 1) - 1
    x = torch.full((2, n_in), float(CLIP))  # every input at the clip: q = 2**k everywhere
    x[1] *= -1
    q = (x * (2.0**k / CLIP)).floor()
    assert float(q.abs().max()) == 2**k
    acc = q @ layer.weight_t  # float32, as the layer computes it
    assert torch.equal(acc.double(), q.double() @ layer.ints["weight"].double().t())
    assert float(acc.abs().max()) == worst


def test_outputs_are_close_to_the_float_layer():
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 64)
    layer = QLinear.quantize(linear.weight, linear.bias, frac=FRAC, clip=CLIP)
    x = torch.randn(32, 128) * 2
    xi = torch.round(x * 2**FRAC)
    out = layer(xi)
    assert out.dtype == torch.float32 and torch.equal(out, out.floor())  # integers
    y = out / 2**FRAC
    ref = linear(xi / 2**FRAC).detach()
    assert float((y - ref).abs().max()) < 0.02 * float(ref.abs().max())
    assert torch.equal(layer(xi), layer(xi.double()))  # input precision does not matter


def test_folded_layernorm_matches_layernorm_then_linear():
    torch.manual_seed(0)
    norm, linear = torch.nn.LayerNorm(128), torch.nn.Linear(128, 96)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_(0, 0.3)
    layer = QLinear.quantize(linear.weight, linear.bias, frac=FRAC, clip=CLIP, norm=norm)
    x = torch.randn(16, 128) * 3 + 1
    y = layer(torch.round(x * 2**FRAC)) / 2**FRAC
    ref = linear(norm(x)).detach()
    assert float((y - ref).abs().max()) < 0.02 * float(ref.abs().max())


def test_too_many_inputs_for_float32_products_is_refused():
    with pytest.raises(ValueError, match="float32-exact"):
        bits_for(2**13)


def test_coding_runs_at_ieee_precision_and_restores_the_users_setting():
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "bf16"  # what set_float32_matmul_precision("medium") asks for
        with ieee_float32():
            assert matmul.fp32_precision == "ieee"
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert matmul.fp32_precision == "bf16"
    finally:
        matmul.fp32_precision = before
