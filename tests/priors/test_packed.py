"""priors/packed.py: the packed product equals nn.Linear's, follows weights changed in place,
and stays out of the way where it does not apply (one row, gradients, other dtypes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from priors import packed

needs_onednn = pytest.mark.skipif(not packed._AVAILABLE, reason="this torch has no oneDNN")


@needs_onednn
@pytest.mark.parametrize("rows", [1, 2, 9, 16, 17])
def test_same_result_as_the_layer(rows):
    torch.manual_seed(0)
    layer = nn.Linear(24, 40)
    x = torch.randn(rows, 24)
    with torch.no_grad():
        assert packed.packs(x, layer) == (2 <= rows <= 16)
        torch.testing.assert_close(packed.linear(x, layer), layer(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed.linear(x[None], layer), layer(x[None]), atol=1e-5, rtol=1e-5)


@needs_onednn
def test_a_weight_changed_in_place_or_replaced_is_packed_again():
    torch.manual_seed(0)
    layer = nn.Linear(8, 8, bias=False)
    x = torch.randn(3, 8)
    with torch.no_grad():
        packed.linear(x, layer)
        layer.weight.mul_(2)  # an optimiser step, a loaded checkpoint
        torch.testing.assert_close(packed.linear(x, layer), layer(x))
        layer.weight = nn.Parameter(torch.randn(8, 8))
        torch.testing.assert_close(packed.linear(x, layer), layer(x))


@needs_onednn
def test_a_layer_that_has_decoded_still_deep_copies_and_pickles():
    import copy
    import pickle

    layer = nn.Linear(8, 8)
    with torch.no_grad():
        packed.linear(torch.randn(3, 8), layer)
    twin = copy.deepcopy(layer)
    pickle.dumps(layer)
    with torch.no_grad():
        x = torch.randn(3, 8)
        torch.testing.assert_close(packed.linear(x, twin), layer(x))


def test_training_and_other_dtypes_take_the_default_product():
    layer = nn.Linear(8, 8)
    x = torch.randn(4, 8)
    assert not packed.packs(x, layer)  # gradients wanted
    y = packed.linear(x, layer)
    assert y.requires_grad
    with torch.no_grad():
        assert not packed.packs(x.double(), layer.double())
        assert not packed.packs(x[:1], layer)


def test_a_compiled_graph_takes_the_default_product():
    layer = nn.Linear(8, 8)
    f = torch.compile(lambda x: packed.linear(x, layer), fullgraph=True, backend="eager")
    with torch.no_grad():
        x = torch.randn(4, 8)
        torch.testing.assert_close(f(x), layer(x))
