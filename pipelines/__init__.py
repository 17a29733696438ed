"""Chaining and running: recipes, data, the training loop, Pipeline and the `tokar` CLI."""

from pipelines.pipeline import Pipeline, Score
from pipelines.recipe import Recipe, load_recipe

__all__ = ["Pipeline", "Recipe", "Score", "load_recipe"]
