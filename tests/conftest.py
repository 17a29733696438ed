"""Test environment: offline, the reference data beside the repository, caches under tmp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKAR_DATA_DIR", str(ROOT.parent / "shared" / "data"))
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA_DIR = Path(os.environ["TOKAR_DATA_DIR"])


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tokenized-data cache and HF cache under the session's tmp dir, never ~/.cache."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("TOKAR_CACHE_DIR", str(root / "tokar-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(root / "hf-cache"))


@pytest.fixture
def fresh_plugins():
    """A plugin manager of the test's own; the process-wide one is restored afterwards."""
    from plugins import create_plugin_manager, manager, set_plugin_manager

    saved = manager._manager
    pm = create_plugin_manager()
    set_plugin_manager(pm)
    yield pm
    set_plugin_manager(saved)


def need_shakespeare() -> Path:
    path = DATA_DIR / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.fail(f"reference data missing: {path} (set TOKAR_DATA_DIR to ../shared/data)")
    return path


@pytest.fixture
def interrupt_at(monkeypatch):
    """`interrupt_at(step)`: the next training run stops with KeyboardInterrupt right after
    writing its step-`step` checkpoint, as if the user pressed Ctrl-C there (fires once)."""
    from pipelines.training.trainer import Trainer

    original = Trainer.save

    def arm(step: int) -> None:
        def save_then_die(self):
            ckpt = original(self)
            if self.state.step == step:
                monkeypatch.setattr(Trainer, "save", original)
                raise KeyboardInterrupt
            return ckpt

        monkeypatch.setattr(Trainer, "save", save_then_die)

    return arm
