"""A pytest plugin, installed with tokar (the `pytest11` entry point): it asks pytest to rewrite
the asserts of tokar's shipped contract suites, so that a plugin author whose component fails
one sees the values involved, not a bare AssertionError (pytest rewrites only test modules by
default, never installed packages)."""

import pytest

pytest.register_assert_rewrite("priors.testing", "tokenizers_ar.testing", "pipelines.testing")
