"""Streaming (corpora larger than memory) and parallel tokenization."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from pipelines import Pipeline
from pipelines.data.sources import HFSource, tokenize
from pipelines.data.streaming import StreamBatches, TokenStream
from tokenizers_ar import CharTokenizer


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    with path.open("w") as f:
        for i in range(200):
            f.write(json.dumps({"body": f"doc {i}: " + "the quick brown fox jumps. " * (1 + i % 4)}) + "\n")
    return path


def recipe(corpus: Path, **train) -> dict:
    return {
        "data": {"source": "hf", "path": "json", "data_files": str(corpus), "column": "body",
                 "streaming": True, "val_examples": 20, "shuffle_buffer": 30},
        "tokenizer": {"name": "char"},
        "prior": {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32,
                  "dropout": 0.1},
        "train": {"max_steps": 20, "batch_size": 4, "eval_every": 10, "eval_batches": 2,
                  "log_every": 5, "eval_samples": 0, **train},
        "sample": {"n": 1, "max_new_tokens": 5},
    }


def test_streaming_source_holds_out_the_head_for_validation(corpus):
    splits = HFSource(path="json", data_files=str(corpus), column="body", streaming=True,
                      val_examples=20).load()
    assert isinstance(splits["train"], datasets.IterableDataset)
    val = list(splits["validation"]["example"])
    assert len(val) == 20 and val[0].startswith("doc 0:")
    first_train = next(iter(splits["train"]))["example"]
    assert first_train.startswith("doc 20:")  # validation examples are not trained on


def test_streamed_run_resumes_exactly(corpus, tmp_path, interrupt_at):
    straight = tmp_path / "straight"
    Pipeline.from_recipe(recipe(corpus)).train(straight, progress=False)
    interrupt_at(10)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Pipeline.from_recipe(recipe(corpus)).train(run, progress=False)
    Pipeline.resume(run, progress=False)
    a = Pipeline.load(run).prior.state_dict()
    b = Pipeline.load(straight).prior.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_processes_read_disjoint_shards(corpus):
    splits = HFSource(path="json", data_files=str(corpus), column="body", streaming=True,
                      val_examples=1).load()
    tok = CharTokenizer()
    tok.fit([" abcdefghijklmnopqrstuvwxyz:0123456789."])
    stream = TokenStream(splits["train"], tok, tok.layout)
    seen = []
    for rank in (0, 1):
        shard = StreamBatches(stream, 8, 2, 0, rank, 2, torch.device("cpu")).shard
        seen.append({row["example"] for row in shard})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 199


def test_parallel_tokenization_equals_serial(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKAR_CACHE_DIR", str(tmp_path / "cache"))
    texts = [f"line {i} " * (i % 7 + 1) for i in range(400)]
    splits = datasets.DatasetDict(train=datasets.Dataset.from_dict({"example": texts}))
    tok = CharTokenizer()
    tok.fit(texts)
    serial = tokenize(splits, tok)["train"]
    monkeypatch.setenv("TOKAR_CACHE_DIR", str(tmp_path / "cache2"))
    parallel = tokenize(splits, tok, num_proc=2)["train"]
    assert np.array_equal(serial.tokens, parallel.tokens) and serial.n_units == parallel.n_units
