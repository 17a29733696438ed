"""Chaining and running: recipes, data, the training loop, Pipeline and the `tokar` CLI."""

from pipelines.likelihood import ExampleScore, Score
from pipelines.pipeline import Pipeline
from pipelines.recipe import Recipe, load_recipe

__all__ = ["ExampleScore", "Pipeline", "Recipe", "Score", "load_recipe"]
