"""A synthetic-text source: documents of sentences from a tiny grammar, reproducible from a seed.
Useful for trying a pipeline without any data; a stand-in for a source that reads your own."""

from __future__ import annotations

import random

import datasets
from pydantic import Field

from pipelines.data.sources import Source, SourceConfig

NOUNS = ["cat", "dog", "bird", "fish", "king", "queen"]
VERBS = ["sees", "likes", "chases", "follows"]
ADJECTIVES = ["small", "old", "red", "quick"]


class SyntheticTextConfig(SourceConfig):  # SourceConfig rejects unknown keys and adds the split
    n_docs: int = Field(200, ge=2, description="documents to generate")
    sentences: int = Field(5, ge=1, description="sentences per document")


class SyntheticText(Source):
    name = "synthetic_text"
    Config = SyntheticTextConfig
    modality = "text"

    def load(self) -> datasets.DatasetDict:
        rng = random.Random(self.config.seed)

        def sentence() -> str:
            return (f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} "
                    f"the {rng.choice(NOUNS)} .")

        docs = [" ".join(sentence() for _ in range(self.config.sentences))
                for _ in range(self.config.n_docs)]
        return self._split(datasets.Dataset.from_dict({"example": docs}))
