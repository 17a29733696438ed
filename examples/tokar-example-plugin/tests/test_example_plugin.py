"""The example plugin through tokar's shipped contract suites, as any plugin author runs them,
and one recipe end to end through the `tokar` command (train, sample, score)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokar_example.laplace import Laplace
from tokar_example.mlp import CausalMLP
from tokar_example.synthetic import SyntheticText
from tokar_example.words import WordTokenizer

from pipelines.testing import SourceContract
from plugins.shared import ValueSpace
from priors.testing import HeadContract, PriorContract
from tokenizers_ar.testing import TokenizerContract, example_data

HERE = Path(__file__).resolve().parents[1]


class TestCausalMLP(PriorContract):
    @pytest.fixture(params=[("seq", "categorical"), ("grid", "categorical"),
                            ("seq", "logistic_mixture"), ("seq-real", "laplace")],
                    ids=lambda c: f"{c[0]}-{c[1]}")
    def case(self, request):
        return request.param

    @pytest.fixture
    def make_prior(self):
        return lambda vocab_size, layout, **kw: CausalMLP(CausalMLP.Config(**kw), vocab_size, layout)


class TestWordTokenizer(TokenizerContract):
    @pytest.fixture
    def tokenizer(self):
        tok = WordTokenizer()
        tok.fit(example_data("text"))
        return tok

    @pytest.fixture
    def examples(self):
        return example_data("text", n=3)


class TestLaplace(HeadContract):
    @pytest.fixture(params=[1, 2])
    def space(self, request):
        return ValueSpace.real(request.param)

    @pytest.fixture
    def head(self, space):
        return Laplace(None, space)


class TestSyntheticText(SourceContract):
    @pytest.fixture
    def source(self):
        return SyntheticText(SyntheticText.Config(n_docs=20))


def test_the_plugin_is_found_through_its_entry_point():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "plugins"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("words", "causal_mlp", "laplace", "synthetic_text", "no_repeat_ngram"):
        line = next(line for line in out.splitlines() if f" {name} " in f" {line} ")
        assert "tokar-example-plugin 0.1.0" in line, line


def test_recipe_end_to_end(tmp_path):
    tokar = [sys.executable, "-m", "pipelines.cli.main", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    subprocess.run([*tokar, "train", str(HERE / "recipe.yaml"), "--run-dir", str(run),
                    "--no-progress"], check=True, env=env, capture_output=True)
    samples = subprocess.run([*tokar, "sample", str(run), "-n", "2", "--out", str(tmp_path / "s.txt")],
                             check=True, env=env, capture_output=True, text=True)
    text = (tmp_path / "s.txt").read_text()
    assert samples.stdout.strip() == str(tmp_path / "s.txt") and "the" in text
    score = json.loads(subprocess.run([*tokar, "score", str(run)], check=True, env=env,
                                      capture_output=True, text=True).stdout)
    assert score["unit"] == "char" and 0 < score["bits_per_unit"] < 3  # 40 words: well below 8 bits/char
    assert torch.isfinite(torch.tensor(score["nats_per_token"]))
