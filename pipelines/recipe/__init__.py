"""Recipes: safe YAML loading, extends and overrides, the schema every section is checked against,
and the size limits checked before anything large is allocated."""
