"""Feature tables that ship inside scikit-learn, as a source of real-valued vectors.

`sklearn_table` gives one example per row: a float64 feature vector (the `real` tokenizer with
`vector: true` turns it into a (1, L) grid of one real per position, standardised on the training
split), with the row's class as its label. The split is fixed: `val_fraction` of the rows held
out with `seed` (Hugging Face `train_test_split`), so every run scores the same held-out rows.

- `wine`: 178 wines x 13 chemical measurements, 3 cultivars (UCI Wine);
- `breast_cancer`: 569 tumours x 30 features of cell nuclei, malignant / benign (UCI WDBC);
- `iris`: 150 flowers x 4 measurements, 3 species.

Nothing is downloaded: the tables are files inside the scikit-learn package.
Not here: tables from files (use the `hf` source with the `csv` builder), feature selection.
"""

from __future__ import annotations

from typing import Literal

import datasets
import numpy as np
from pydantic import Field

from pipelines.data.sources import Source, SourceConfig


class SklearnTableConfig(SourceConfig):
    dataset: Literal["wine", "breast_cancer", "iris"] = Field("wine", description="which table")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of rows held out (fixed by seed)")


class SklearnTableSource(Source):
    name = "sklearn_table"
    Config = SklearnTableConfig
    modality = "series"

    def load(self) -> datasets.DatasetDict:
        from sklearn import datasets as sk

        table = {"wine": sk.load_wine, "breast_cancer": sk.load_breast_cancer,
                 "iris": sk.load_iris}[self.config.dataset]()
        names = [str(n) for n in table.target_names]
        features = datasets.Features({"example": datasets.Sequence(datasets.Value("float64")),
                                      "label": datasets.ClassLabel(names=names)})
        ds = datasets.Dataset.from_dict({"example": table.data.astype(np.float64),
                                         "label": table.target.astype(np.int64)}, features=features)
        return self._split(ds)
