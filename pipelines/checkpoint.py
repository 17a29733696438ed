"""Checkpoints written atomically: a reader sees a complete checkpoint or none at all.

Layout: RUN_DIR/checkpoints/step_0000500/ with model.safetensors, optimizer.pt (optimizer and
scheduler), rng_<rank>.pt (each process's random state: dropout masks continue exactly after a
resume) and state.json (step, batches consumed, validation history). Everything is written into a
hidden temporary folder, flushed to disk, then renamed into place in one step, so a crash, a
SIGKILL or a full disk mid-save leaves the earlier checkpoints untouched. Files are read back with
safetensors and torch.load(weights_only=True): no pickled code is ever executed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn

from plugins.errors import CheckpointError
from priors.base import load_weights

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
PREFIX = "step_"


@dataclass
class Checkpoint:
    path: Path
    step: int

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{self.path / STATE_FILE} is unreadable or corrupt ({exc}).") from exc


def fsync_tree(path: Path) -> None:
    for p in path.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Flush `tmp` to disk and move it to `final` in one rename (replacing an older `final`)."""
    fsync_tree(tmp)
    if final.exists():
        old = final.parent / f".old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_atomically(final: Path, write: Any) -> Path:
    """Call write(tmp_dir), then move tmp_dir to `final` in one rename."""
    final = Path(final)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def tmp_dir(root: Path, step: int) -> Path:
    """The temporary folder of a checkpoint in progress (the same name on every process)."""
    return Path(root) / f".tmp-{PREFIX}{step:07d}"


def write_checkpoint_files(tmp: Path, model: nn.Module, optimizer: Any, scheduler: Any,
                           state: dict[str, Any]) -> None:
    save_model(model, str(tmp / MODEL_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints and the one with the best validation loss."""
    ckpts = list_checkpoints(root)
    best = best_checkpoint(ckpts)
    for old in ckpts[:-keep]:
        if best is None or old.path != best.path:
            shutil.rmtree(old.path, ignore_errors=True)


def best_checkpoint(ckpts: list[Checkpoint]) -> Checkpoint | None:
    scored = []
    for c in ckpts:
        val = c.state().get("val_loss")
        if val is not None:
            scored.append((val, c.step, c))
    return min(scored, key=lambda t: (t[0], t[1]))[2] if scored else None


def list_checkpoints(root: Path) -> list[Checkpoint]:
    """Complete checkpoints, oldest first (temporary folders are skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE_FILE).is_file():
            try:
                found.append(Checkpoint(p, int(p.name[len(PREFIX) :])))
            except ValueError:
                continue
    return sorted(found, key=lambda c: c.step)


def load_checkpoint(ckpt: Checkpoint, model: nn.Module, optimizer: Any = None,
                    scheduler: Any = None) -> dict[str, Any]:
    """Restore weights (and optimizer and scheduler if given); returns the saved trainer state."""
    load_weights(model, ckpt.path / MODEL_FILE)
    if optimizer is not None or scheduler is not None:
        saved = _torch_load(ckpt.path / OPTIMIZER_FILE)
        if optimizer is not None:
            optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
    return ckpt.state()


def load_rng(ckpt: Checkpoint, rank: int) -> None:
    """Continue process `rank`'s random streams exactly where the checkpoint left them."""
    rng = ckpt.path / f"rng_{rank}.pt"
    if rng.is_file():
        set_rng_state(_torch_load(rng))
    else:
        logger.warning("%s has no random state for process %d (resumed with a different number "
                       "of processes?): dropout masks will differ from an uninterrupted run",
                       ckpt.path, rank)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}).") from exc
