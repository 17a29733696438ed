"""The teacher_samples source: a draft trained on a run's own samples, with its tokenizer, drafts
for that run (speculative decoding through the pipeline); what cannot work is a clear error."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from pipelines import Pipeline
from pipelines.training import distill
from pipelines.training.distill import TeacherSamplesSource
from plugins.errors import DataError
from tests.conftest import need_shakespeare

pytestmark = pytest.mark.slow


def test_a_distilled_draft_drafts_for_its_teacher(tmp_path):
    need_shakespeare()
    teacher = Pipeline.from_recipe("recipes/debug/char_gpt.yaml", ["train.max_steps=5"])
    teacher.train(tmp_path / "teacher", progress=False)
    run = str(tmp_path / "teacher")
    source = TeacherSamplesSource(run=run, n_samples=6, length=40, batch_size=4, val_fraction=0.34)
    splits = source.load()
    train, val = splits["train"]["example"][0], splits["validation"]["example"][0]
    assert len(train.split("\n\n")) >= 4 and len(val) >= 40
    assert source.load()["train"]["example"][0] == train  # cached: the same samples again

    student = Pipeline.from_recipe("recipes/shakespeare/char_gpt_distilled_draft.yaml", [
        f"data.run={run}", f"tokenizer.pretrained={run}", "data.n_samples=6", "data.length=40",
        "train.max_steps=3", "train.eval_every=3", "train.eval_batches=1", "train.batch_size=2",
        "prior.block_size=16", "sample.n=1", "sample.max_new_tokens=5"])
    student.train(tmp_path / "draft", progress=False)
    assert student.tokenizer.vocab_size == teacher.tokenizer.vocab_size
    greedy = dict(greedy=True, max_new_tokens=30, prompt="ROMEO:")
    spec = teacher.generate(1, draft=tmp_path / "draft", **greedy)
    assert spec.tokens.tolist() == teacher.generate(1, **greedy).tokens.tolist()
    assert spec.proposed > 0
    with pytest.raises(DataError, match="not a trained run"):
        TeacherSamplesSource(run=str(tmp_path)).load()


def test_the_samples_are_keyed_by_the_teachers_identity_not_its_files(tmp_path, monkeypatch):
    """The cache is reused for the same teacher (a touched or copied run included) and rebuilt
    when the teacher's weights change."""
    need_shakespeare()
    run = tmp_path / "teacher"
    Pipeline.from_recipe("recipes/debug/char_gpt.yaml", ["train.max_steps=2", "train.eval_samples=0"]
                         ).train(run, progress=False)
    calls = []
    real = distill.generate

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(distill, "generate", counted)
    monkeypatch.setenv("TOKAR_CACHE_DIR", str(tmp_path / "cache"))

    def samples(at: Path) -> list[str]:
        return TeacherSamplesSource(run=str(at), n_samples=2, length=8, batch_size=2)._samples()

    first = samples(run)
    assert len(calls) == 1
    weights = run / "prior" / "model.safetensors"
    later = weights.stat().st_mtime_ns + 5_000_000_000
    os.utime(weights, ns=(later, later))  # touched, same weights: the cache holds
    assert samples(run) == first and len(calls) == 1
    shutil.copytree(run, tmp_path / "copy")  # the same teacher elsewhere: the cache holds
    assert samples(tmp_path / "copy") == first and len(calls) == 1

    teacher = Pipeline.load(run)
    with torch.no_grad():
        next(teacher.prior.parameters()).add_(1.0)  # other weights: other samples, drawn anew
    teacher.prior.save(run / "prior")
    samples(run)
    assert len(calls) == 2
    assert len(list((tmp_path / "cache" / "teacher_samples").glob("*.json"))) == 2
