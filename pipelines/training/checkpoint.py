"""Checkpoints written atomically: a reader sees a complete checkpoint or none at all.

Layout: RUN_DIR/checkpoints/step_0000500/ with model.safetensors, optimizer.pt (optimizer and
scheduler), rng_<rank>.pt (each process's random state: dropout masks continue exactly after a
resume) and state.json (step, batches consumed, validation history). Everything is written into a
hidden temporary folder, flushed to disk, then renamed into place in one step, so a crash, a
SIGKILL or a full disk mid-save leaves the earlier checkpoints untouched; the temporary folder's
name is unique to its writer, and a failed save removes it. state.json, written last, also holds
the SHA-256 of every other file: torch.load does not check its zip CRCs, so without them a
damaged optimizer.pt would load silently. `verify_checkpoint` checks all of it (hashes, types,
shapes against the model and optimizer) without changing anything, so that a resume can pick the
newest good checkpoint before it touches the run. Files are read back with safetensors and
torch.load(weights_only=True): no pickled code is ever executed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn

from pipelines.io.atomic import saved_bytes
from pipelines.io.safe import free_bytes, human_bytes, is_disk_full, read_json, write_error
from plugins.errors import CheckpointError, TokarError
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
        return read_json(self.path / STATE_FILE, "checkpoint state", CheckpointError)


def checkpoint_bytes(model: nn.Module, optimizer: Any) -> int:
    """About the size of one checkpoint: weights plus the optimizer's state tensors."""
    size = saved_bytes(model) or 0
    for state in optimizer.state_dict()["state"].values():
        size += sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))
    return size


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


def save_failure(exc: BaseException, step: int, root: Path, run_dir: Path,
                 needed: Any = None) -> CheckpointError | None:
    """The error for a checkpoint save that failed with `exc` (None: not a storage failure, so a
    bug that keeps its traceback). Names the cause, the space needed when the disk is full, the
    checkpoint that is still intact and the command that continues the run."""
    if write_error(exc, root / f"{PREFIX}{step:07d}") is None:
        return None
    previous = list_checkpoints(root)
    kept = f"{previous[-1].path} is intact" if previous else "no earlier checkpoint exists"
    if is_disk_full(exc):
        size = needed() if callable(needed) else needed
        free = free_bytes(root)
        space = "".join([f": about {human_bytes(size)} needed" if size else "",
                         f", {human_bytes(free)} free" if free is not None else ""])
        cause, fix = f"No space left on device{space}", "Free some space"
    else:
        os_error = next((e for e in (exc, exc.__cause__, exc.__context__) if isinstance(e, OSError)), None)
        cause = f"{os_error.strerror}: {os_error.filename}" if os_error is not None and \
            os_error.strerror else str(exc)
        fix = "Fix that"
    return CheckpointError(f"could not write the step-{step} checkpoint ({cause}); {kept}. {fix}, then "
                           f"continue with `tokar train --resume {run_dir}`.")


def tmp_dir(root: Path, step: int, writer: str = "") -> Path:
    """The temporary folder of a checkpoint in progress: the same name on every process of one
    launch, unique to its writer (`writer_id`)."""
    return Path(root) / f".tmp-{PREFIX}{step:07d}{'-' + writer if writer else ''}"


def write_checkpoint_files(tmp: Path, model: nn.Module, optimizer: Any, scheduler: Any,
                           state: dict[str, Any]) -> None:
    save_model(model, str(tmp / MODEL_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               tmp / OPTIMIZER_FILE)
    # state.json last: it marks the checkpoint complete and vouches for every other file
    state = {**state, "files": {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        try:
            val = c.state().get("val_loss")
        except TokarError:
            continue  # an unreadable checkpoint is never the best one
        if isinstance(val, int | float) and math.isfinite(val):
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
        try:
            if optimizer is not None:
                optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise CheckpointError(f"{ckpt.path / OPTIMIZER_FILE} does not fit this model's optimizer "
                                  f"({type(exc).__name__}: {exc}).") from exc
    return ckpt.state()


# -- verification: everything a resume will read, checked before the run changes ----------------
def verify_checkpoint(ckpt: Checkpoint, model: nn.Module, params: list[torch.Tensor] | None = None,
                      world_size: int = 1) -> dict[str, Any]:
    """Check that `ckpt` can be resumed from: recorded hashes, state.json's fields, weights that
    fit `model` (loaded into it), an optimizer state whose tensors fit `params` (in optimizer
    order), readable random states. Returns the trainer state; raises CheckpointError."""
    state = ckpt.state()
    verify_hashes(ckpt, state)
    _check_state(ckpt, state)
    load_weights(model, ckpt.path / MODEL_FILE)
    if params is not None:
        saved = _torch_load(ckpt.path / OPTIMIZER_FILE)
        _check_optimizer(ckpt.path / OPTIMIZER_FILE, saved, params)
    for rank in range(world_size):
        rng = ckpt.path / f"rng_{rank}.pt"
        if rng.is_file():
            _check_rng(rng, _torch_load(rng))
    return state


def verify_hashes(ckpt: Checkpoint, state: dict[str, Any] | None = None) -> None:
    """The files match the SHA-256 recorded in state.json (checkpoints written before hashes
    were recorded are checked by structure only)."""
    files = (state if state is not None else ckpt.state()).get("files")
    if files is None:
        return
    if not isinstance(files, dict):
        raise CheckpointError(f"{ckpt.path / STATE_FILE} is corrupt: 'files' is not a mapping.")
    for name, digest in files.items():
        path = ckpt.path / str(name)
        if not path.is_file():
            raise CheckpointError(f"{path} is missing from the checkpoint.")
        if sha256(path) != digest:
            raise CheckpointError(f"{path} is corrupt: its contents changed since the checkpoint "
                                  "was written (SHA-256 mismatch).")


def _check_state(ckpt: Checkpoint, state: dict[str, Any]) -> None:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{ckpt.path / STATE_FILE} is corrupt: {why}.")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if state.get("step") != ckpt.step or not is_int(state.get("step")):
        raise bad(f"its step {state.get('step')!r} is not the folder's step {ckpt.step}")
    for key in ("batches_consumed", "evals_without_improvement"):
        if key in state and not (is_int(state[key]) and state[key] >= 0):
            raise bad(f"{key} should be a count, found {state[key]!r}")
    best = state.get("best_val_loss")
    if best is not None and not isinstance(best, int | float):
        raise bad(f"best_val_loss should be a number, found {best!r}")
    history = state.get("history", [])
    if not isinstance(history, list) or not all(
            isinstance(h, dict) and is_int(h.get("step")) and isinstance(h.get("loss"), int | float)
            for h in history):
        raise bad("history should be a list of {step, loss, bits_per_unit} records")


def _check_optimizer(path: Path, saved: Any, params: list[torch.Tensor]) -> None:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is corrupt or from another model: {why}.")

    if not isinstance(saved, dict) or not isinstance(saved.get("optimizer"), dict) \
            or not isinstance(saved.get("scheduler"), dict):
        raise bad("expected {'optimizer': ..., 'scheduler': ...}")
    opt = saved["optimizer"]
    groups, state = opt.get("param_groups"), opt.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise bad("its optimizer state has no param_groups/state")
    n_saved = sum(len(g["params"]) for g in groups)
    if n_saved != len(params):
        raise bad(f"it holds state for {n_saved} parameters, the model has {len(params)}")
    for index, entry in state.items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise bad(f"unexpected optimizer state entry {index!r}")
        for name, value in entry.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != params[index].shape:
                raise bad(f"{name} of parameter {index} has shape {tuple(value.shape)}, the model's "
                          f"is {tuple(params[index].shape)}")
    if not isinstance(saved["scheduler"].get("last_epoch"), int):
        raise bad("its scheduler state has no step count")


def _check_rng(path: Path, state: Any) -> None:
    reference = torch.get_rng_state()
    ok = isinstance(state, dict) and torch.is_tensor(state.get("torch")) \
        and state["torch"].dtype == torch.uint8 and state["torch"].shape == reference.shape
    if ok:
        try:
            random.Random().setstate(state["python"])
        except (TypeError, ValueError, KeyError):
            ok = False
    if not ok:
        raise CheckpointError(f"{path} is corrupt: it is not a random-number state.")


def newest_loadable(ckpts: list[Checkpoint], model: nn.Module) -> Checkpoint:
    """Load the newest checkpoint whose weights are intact into `model`; older ones stand in
    (with a warning) for damaged newer ones."""
    problems = []
    for ckpt in reversed(ckpts):
        try:
            verify_hashes(ckpt)
            load_weights(model, ckpt.path / MODEL_FILE)
        except TokarError as exc:
            logger.warning("skipping checkpoint %s: %s", ckpt.path.name, exc)
            problems.append(f"{ckpt.path.name}: {exc}")
            continue
        return ckpt
    raise CheckpointError("no checkpoint can be loaded:\n" + "\n".join(f"  - {p}" for p in problems))


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
