"""A draft distilled from its target, for speculative decoding: the `teacher_samples` source
trains a model on text sampled from a trained run (sequence-level knowledge distillation, Kim &
Rush 2016; DistillSpec, Zhou et al. 2023, finds that a draft trained on the target's own
samples agrees with it more often than one trained on the data, which is what a draft is for).

    tokar train recipes/shakespeare/char_gpt_distilled_draft.yaml data.run=RUNS/large \
        tokenizer.pretrained=RUNS/large

The source samples `n_samples` sequences of `length` tokens from the run (batched, at
`temperature`, seeded), decodes them, and serves them as one text stream like the `text` source:
training text first, the last `val_fraction` of the samples for validation. The samples are
cached under $TOKAR_CACHE_DIR/teacher_samples, keyed by the teacher's identity (its prior's and
tokenizer's fingerprints, not the files' paths or times) and these settings.
Use the teacher's own tokenizer (`tokenizer.pretrained: RUN`): a draft must speak the target's
token ids.
Not here: token-level distillation on the teacher's logits (a KL loss in the training loop),
image or audio teachers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import datasets
import torch
from pydantic import Field

from pipelines.data.sources import Source, SourceConfig
from pipelines.io.atomic import write_text_atomically
from pipelines.pipeline import Pipeline
from plugins.errors import DataError
from priors import DecodeConfig, generate

log = logging.getLogger(__name__)


class TeacherSamplesConfig(SourceConfig):
    run: str = Field(description="the trained run to distill (its directory)")
    n_samples: int = Field(64, ge=2, description="sequences sampled from the run")
    length: int = Field(512, ge=1, description="tokens per sequence")
    temperature: float = Field(1.0, gt=0)
    batch_size: int = Field(64, ge=1, description="sequences generated at once")
    sample_seed: int = Field(0, description="seed of the sampling")


class TeacherSamplesSource(Source):
    name = "teacher_samples"
    Config = TeacherSamplesConfig
    modality = "text"

    def load(self) -> datasets.DatasetDict:
        texts = self._samples()
        n_val = int(len(texts) * self.config.val_fraction)
        cut = len(texts) - n_val
        return datasets.DatasetDict(
            train=datasets.Dataset.from_dict({"example": ["\n\n".join(texts[:cut])]}),
            validation=datasets.Dataset.from_dict(
                {"example": ["\n\n".join(texts[cut:])] if n_val else []}),
        )

    def _samples(self) -> list[str]:
        c = self.config
        run = Path(c.run)
        weights = run / "prior" / "model.safetensors"
        if not weights.is_file():
            raise DataError(f"teacher_samples source: {run} is not a trained run (no "
                            f"{weights.relative_to(run)}); set data.run to a run directory.")
        teacher = Pipeline.load(run)
        # The teacher's identity, not its files': a copied or touched run reuses the samples,
        # retrained weights (or another tokenizer, which decodes them) draw new ones.
        key = hashlib.sha256(json.dumps([teacher.prior.fingerprint(), teacher.tokenizer.fingerprint(),
                                         c.n_samples, c.length, c.temperature, c.sample_seed],
                                        ).encode()).hexdigest()[:16]
        cache = Path(os.environ.get("TOKAR_CACHE_DIR", Path.home() / ".cache" / "tokar"))
        path = cache / "teacher_samples" / f"{key}.json"
        if path.is_file():
            return json.loads(path.read_text())
        if teacher.tokenizer.modality != "text":
            raise DataError(f"teacher_samples source: {run} models {teacher.tokenizer.modality}; "
                            "only text runs can be distilled this way.")
        texts: list[str] = []
        for i in range(0, c.n_samples, c.batch_size):
            n = min(c.batch_size, c.n_samples - i)
            # the run's own distribution, not its recipe's sampling defaults (top-k...)
            out = generate(teacher.prior, n, DecodeConfig(max_new_tokens=c.length,
                                                          temperature=c.temperature),
                           generator=torch.Generator().manual_seed(c.sample_seed + i))
            texts += [str(t) for t in teacher.decode(out)]
            log.info("teacher_samples: %d of %d sequences sampled from %s", len(texts),
                     c.n_samples, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(texts))
        return texts
