"""Checkpoints written atomically: a reader sees a complete checkpoint or none at all.

Layout: RUN_DIR/checkpoints/step_0000500/{model.safetensors, optimizer.pt, state.json}. Each is
written into a hidden temporary folder, flushed to disk, then renamed into place in one step, so a
crash or a full disk mid-save leaves the previous checkpoints untouched. Optimizer state is read
back with torch.load(weights_only=True): no pickled code is ever executed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn

from plugins.errors import CheckpointError
from priors.base import load_weights

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
PREFIX = "step_"


@dataclass
class Checkpoint:
    path: Path
    step: int


def _fsync_tree(path: Path) -> None:
    for p in path.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())


def write_atomically(final: Path, write: Any) -> Path:
    """Call write(tmp_dir), then move tmp_dir to `final` in one rename."""
    final = Path(final)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        _fsync_tree(tmp)
        if final.exists():  # re-saving the same step: move the old one aside first
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep: int,
) -> Checkpoint:
    def write(tmp: Path) -> None:
        save_model(model, str(tmp / MODEL_FILE))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            tmp / OPTIMIZER_FILE,
        )
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2) + "\n")

    path = write_atomically(Path(root) / f"{PREFIX}{step:07d}", write)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return Checkpoint(path, step)


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


def load_checkpoint(
    ckpt: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Restore weights (and optimizer/scheduler if given); returns the saved trainer state."""
    load_weights(model, ckpt.path / MODEL_FILE)
    if optimizer is not None or scheduler is not None:
        try:
            saved = torch.load(ckpt.path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{ckpt.path / OPTIMIZER_FILE} is truncated or corrupt ({exc})."
            ) from exc
        if optimizer is not None:
            optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
    try:
        return json.loads((ckpt.path / STATE_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{ckpt.path / STATE_FILE} is corrupt ({exc}).") from exc
