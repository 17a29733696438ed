"""Real-valued feature tables: the sklearn_table source (a fixed split) and MADE-MoG on it, end
to end through the pipeline (train, score, sample)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipelines import Pipeline
from pipelines.data.tables import SklearnTableSource

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/tabular/real_made_mog.yaml"


def test_the_table_split_is_fixed_and_complete():
    a = SklearnTableSource(dataset="wine").load()
    b = SklearnTableSource(dataset="wine").load()
    assert len(a["train"]) + len(a["validation"]) == 178 and len(a["validation"]) == 36
    assert a["validation"]["example"] == b["validation"]["example"]
    assert len(a["train"][0]["example"]) == 13
    assert a["train"].features["label"].names == ["class_0", "class_1", "class_2"]


def test_made_mog_trains_scores_and_samples_feature_vectors(tmp_path):
    pipe = Pipeline.from_recipe(RECIPE, ["train.max_steps=30", "train.eval_every=15", "sample.n=3"])
    pipe.train(tmp_path / "run", progress=False)
    assert pipe.tokenizer.layout.shape == (1, 30) and pipe.tokenizer.layout.dims == 1
    score = pipe.score()
    assert score.examples == 114 and math.isfinite(score.nats_per_token)
    samples = pipe.sample(3)
    assert all(isinstance(x, np.ndarray) and x.shape == (30,) and np.isfinite(x).all() for x in samples)
    rows = (tmp_path / "run" / "samples" / "samples.csv").read_text().splitlines()
    assert len(rows) == 3 and len(rows[0].split(",")) == 30
    # an ensemble over the masks scores the held-out rows too
    x = np.stack([pipe.encode(e).numpy() for e in pipe.recipe.data.cls(pipe.recipe.data.config)
                  .load()["validation"]["example"][:5]])
    import torch

    lp = pipe.prior.ensemble_log_prob(torch.from_numpy(x).view(5, 30, 1))
    assert lp.shape == (5,) and torch.isfinite(lp).all()
