"""Trained runs shared by the fault tests (built once per session; tests that change a run copy it
first with `copy_run`), and a digest of a directory tree to prove that a failure changed nothing."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from pipelines import Pipeline
from pipelines.training.trainer import Trainer
from tests.conftest import ROOT, need_shakespeare

DEBUG = ROOT / "recipes" / "debug"
# char GPT, checkpoints every 5 steps and all of them kept: resumes have several to choose from
CHECKPOINTED = ["train.checkpoint_every=5", "train.keep_checkpoints=5", "train.eval_every=5",
                "train.eval_samples=0", "prior.dropout=0.1"]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones included) -> SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


@pytest.fixture(scope="session")
def fault_char(tmp_path_factory) -> Path:
    need_shakespeare()
    run = tmp_path_factory.mktemp("faults") / "char"
    Pipeline.from_recipe(DEBUG / "char_gpt.yaml").train(run, progress=False)
    return run


@pytest.fixture(scope="session")
def fault_pixel(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "pixel"
    Pipeline.from_recipe(DEBUG / "pixel_gpt.yaml", ["train.max_steps=4"]).train(run, progress=False)
    return run


@pytest.fixture(scope="session")
def fault_audio(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "audio"
    Pipeline.from_recipe(DEBUG / "mulaw_gpt.yaml", ["train.max_steps=2", "train.eval_every=2",
                                                    "sample.n=1", "sample.max_new_tokens=20"]
                         ).train(run, progress=False)
    return run


@pytest.fixture(scope="session")
def straight_checkpointed(tmp_path_factory) -> Path:
    """20 steps, uninterrupted: what every resumed copy of `interrupted` must end with."""
    need_shakespeare()
    run = tmp_path_factory.mktemp("faults") / "straight"
    Pipeline.from_recipe(DEBUG / "char_gpt.yaml", CHECKPOINTED).train(run, progress=False)
    return run


@pytest.fixture(scope="session")
def interrupted(tmp_path_factory) -> Path:
    """The same run stopped (Ctrl-C) right after its step-15 checkpoint: checkpoints 5, 10, 15."""
    need_shakespeare()
    run = tmp_path_factory.mktemp("faults") / "interrupted"
    original = Trainer.save

    def save_then_stop(self):
        ckpt = original(self)
        if self.state.step == 15:
            raise KeyboardInterrupt
        return ckpt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            Pipeline.from_recipe(DEBUG / "char_gpt.yaml", CHECKPOINTED).train(run, progress=False)
    return run
