"""Chaining and running: recipes, data, the training loop, Pipeline and the `tokar` CLI."""

from pipelines.pipeline import Pipeline
from pipelines.recipe.loader import Recipe, load_recipe
from pipelines.scoring import ExampleScore, Score

__all__ = ["ExampleScore", "Pipeline", "Recipe", "Score", "load_recipe"]
