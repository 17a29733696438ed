"""Orderings between tokenizer and prior: the permutations, the recipe section, and the pipeline
applying them to training, scoring and sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import Pipeline
from pipelines.data.order import ORDERS, OrderConfig, Ordering, hilbert_cells, pixel_order
from pipelines.recipe.loader import load_recipe
from plugins.errors import RecipeError
from plugins.shared import Layout
from priors.decoding import Generation

ROOT = Path(__file__).resolve().parents[2]
DEBUG_PIXEL = ROOT / "recipes/debug/pixel_gpt.yaml"


@pytest.mark.parametrize("name", ORDERS)
@pytest.mark.parametrize("shape", [(28, 28), (5, 7), (8, 3), (1, 9)])
def test_every_order_is_a_permutation(name, shape):
    order = pixel_order(name, *shape, seed=1)
    assert sorted(order.tolist()) == list(range(shape[0] * shape[1]))


def test_the_orders_visit_pixels_as_named():
    assert pixel_order("snake", 2, 3).tolist() == [0, 1, 2, 5, 4, 3]
    assert pixel_order("column", 2, 3).tolist() == [0, 3, 1, 4, 2, 5]
    assert pixel_order("reverse", 2, 2).tolist() == [3, 2, 1, 0]
    assert pixel_order("zorder", 4, 4).tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    assert not np.array_equal(pixel_order("random", 4, 4, seed=0), pixel_order("random", 4, 4, seed=1))
    assert np.array_equal(pixel_order("random", 4, 4, seed=2), pixel_order("random", 4, 4, seed=2))


@pytest.mark.parametrize("shape", [(8, 8), (28, 28), (6, 10)])
def test_the_hilbert_curve_steps_between_neighbours(shape):
    cells = hilbert_cells(*shape)
    steps = [abs(r1 - r0) + abs(c1 - c0) for (r0, c0), (r1, c1) in zip(cells, cells[1:], strict=False)]
    assert set(steps) == {1}, "every step of the curve should go to a neighbouring pixel"
    if shape == (8, 8):  # the classic curve: a quadrant is finished before the next is entered
        quadrants = [(r // 4, c // 4) for r, c in cells]
        assert all(len(set(quadrants[i : i + 16])) == 1 for i in range(0, 64, 16))


def test_channels_of_a_pixel_stay_together_and_the_round_trip_is_exact():
    ordering = Ordering(OrderConfig(name="column"), Layout.grid(2, 2, 3))
    x = torch.arange(12).view(2, 2, 3)  # values = raster positions
    permuted = ordering.permute(x)
    assert permuted.shape == x.shape
    assert permuted.reshape(-1).tolist() == [0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11]
    assert torch.equal(ordering.unpermute(permuted), x)
    real = Ordering(OrderConfig(name="reverse"), Layout.grid(1, 4, dims=2))
    v = torch.randn(1, 4, 2)
    assert torch.equal(real.permute(v)[0, 0], v[0, 3]) and torch.equal(real.unpermute(real.permute(v)), v)
    assert Ordering(OrderConfig(), Layout.seq()).identity


def test_recipes_refuse_orders_that_cannot_apply():
    with pytest.raises(RecipeError, match="pixelcnn' assumes raster order"):
        load_recipe(ROOT / "recipes/debug/pixel_pixelcnn.yaml", ["order.name=snake"])
    with pytest.raises(RecipeError, match="only raster applies to sequences"):
        load_recipe(ROOT / "recipes/debug/char_gpt.yaml", ["order.name=reverse"])
    with pytest.raises(RecipeError, match="order.name"):
        load_recipe(DEBUG_PIXEL, ["order.name=spiral"])
    with pytest.raises(RecipeError, match="order.sed: unknown key"):
        load_recipe(DEBUG_PIXEL, ["order.sed=1"])
    r = load_recipe(DEBUG_PIXEL, ["order={name: hilbert}"])
    assert r.order.name == "hilbert" and r.to_dict()["order"] == {"name": "hilbert", "seed": 0}
    assert load_recipe(ROOT / "recipes/debug/pixel_pixelcnn.yaml").order.name == "raster"


def test_the_pipeline_trains_scores_and_samples_in_the_order(tmp_path):
    pipe = Pipeline.from_recipe(DEBUG_PIXEL, ["order.name=snake", "train.max_steps=4",
                                              "train.eval_samples=0", "sample.n=2"])
    pipe.train(tmp_path / "run", progress=False)
    again = Pipeline.load(tmp_path / "run")
    assert again.recipe.order.name == "snake"
    splits = pipe.recipe.data.cls(pipe.recipe.data.config).load()
    image, label = splits["validation"][0]["example"], splits["validation"][0]["label"]
    ids = again.encode(image)  # what the prior reads: the snake order of the pixel ids
    plain = again.tokenizer.encode(image)
    assert torch.equal(ids.view(8, 8)[1], plain.view(8, 8)[1].flip(0))
    assert torch.equal(ids.view(8, 8)[0], plain.view(8, 8)[0])
    # training data goes through the same path: the tokenized rows are in snake order
    from pipelines.data.sources import tokenize
    rows = tokenize({"validation": splits["validation"]}, again.ordered_tokenizer)["validation"]
    assert torch.equal(torch.from_numpy(rows.tokens[0]), ids.view(-1))
    prior = again.prior
    with torch.no_grad():
        want = -prior.log_prob(ids.view(1, -1), torch.tensor([label])).item()
        raster = -prior.log_prob(plain.view(1, -1), torch.tensor([label])).item()
    score = again.score([image], labels=[label])
    assert score.per_example[0].nats == pytest.approx(want, rel=1e-5)
    assert abs(want - raster) > 1e-3  # the order matters to the prior
    # a generated sequence is in the prior's order; decoding puts the pixels back
    decoded = again.decode(Generation(ids.view(1, -1), torch.tensor([64])))[0]
    assert np.array_equal(np.asarray(decoded), np.asarray(again.tokenizer.decode(plain)))
    assert len(again.sample(2)) == 2
