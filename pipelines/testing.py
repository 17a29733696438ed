"""The source contract suite, shipped so plugin authors run the same checks tokar runs on its own
data sources (the `tokar_register_sources` hook).

Subclass it and provide a `source` fixture, an instance of your Source with small settings::

    import pytest
    from pipelines.testing import SourceContract

    class TestMySource(SourceContract):
        @pytest.fixture
        def source(self):
            return MySource(MySource.Config(n_docs=5))

It checks: `load()` gives "train" and "validation" splits with an "example" column (and an
integer "label" column when there is one), a non-empty training split, examples of the kind the
source's `modality` promises, and a Config that rejects unknown keys (a misspelled recipe key
must be an error, not silently ignored). Failures name the values involved.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipelines.data.sources import Source

KINDS = {"text": (str,), "series": None, "image": None, "audio": None}


class SourceContract:
    """Checks every data source must pass. Fixture: `source` (an instance)."""

    @pytest.fixture
    def splits(self, source: Source) -> Any:
        return source.load()

    def test_splits_and_columns(self, source: Source, splits) -> None:
        assert {"train", "validation"} <= set(splits), \
            f"load() must give 'train' and 'validation' splits, gave {sorted(splits)}"
        for name in ("train", "validation"):
            columns = splits[name].column_names
            assert "example" in columns, f"the {name} split has columns {columns}, no 'example'"
            extra = set(columns) - {"example", "label"}
            assert not extra, f"the {name} split has columns {sorted(extra)} beyond 'example' and 'label'"
        train = splits["train"]
        if hasattr(train, "__len__"):
            assert len(train) > 0, "the training split is empty"

    def test_labels_are_integer_classes(self, splits) -> None:
        for name in ("train", "validation"):
            if "label" in splits[name].column_names and len(splits[name]):
                labels = list(splits[name]["label"])
                assert all(isinstance(v, int) and v >= 0 for v in labels), \
                    f"{name} labels must be integers >= 0, got e.g. {labels[:5]}"

    def test_examples_match_the_modality(self, source: Source, splits) -> None:
        kinds = KINDS.get(type(source).modality or "")
        first = next(iter(splits["train"]))["example"]
        if kinds is not None:
            assert isinstance(first, kinds), \
                f"modality {type(source).modality!r} promises {kinds}, got {type(first).__name__}"
        assert first is not None, "the first training example is None"

    def test_unknown_settings_are_rejected(self, source: Source) -> None:
        settings = source.config.model_dump()
        with pytest.raises(ValidationError, match="no_such_setting"):
            type(source).Config(**settings, no_such_setting=1)
