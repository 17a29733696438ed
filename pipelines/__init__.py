"""Chaining and running: recipes, data, the training loop, Pipeline and the `tokar` CLI."""

from pipelines.pipeline import Pipeline
from pipelines.recipe import Recipe, load_recipe
from pipelines.scoring import Score

__all__ = ["Pipeline", "Recipe", "Score", "load_recipe"]
