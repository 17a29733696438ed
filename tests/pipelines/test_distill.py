"""The teacher_samples source: a draft trained on a run's own samples, with its tokenizer, drafts
for that run (speculative decoding through the pipeline); what cannot work is a clear error."""

from __future__ import annotations

import pytest

from pipelines import Pipeline
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
