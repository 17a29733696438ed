"""The run directory: its files, who may write into it, and writing them so that a crash never
leaves a half-written file that a later run would trust.

    RUN_DIR/recipe.yaml   run.json   tokenizer/   prior/   checkpoints/   metrics.jsonl   samples/

Ownership. `run.json` is the run marker: tokar writes it (with its version) the moment it claims
a directory, before anything else. `tokar train --run-dir DIR` writes only into a directory that
is new, empty, or marked by tokar and not yet holding a trained run; anything else (a folder of
the user's own files) is refused, naming it, so that nothing of theirs is replaced. A claimed
directory is locked for the whole run (pipelines/runs/lock.py). Default run names are made unique
by creating the directory exclusively, so parallel sweeps started in the same second never share
one.

Not here: checkpoints (pipelines/training/checkpoint.py), what a resume may change
(pipelines/training/resume.py), atomic writes (pipelines/io/atomic.py).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pipelines.io.atomic import write_json_atomically, write_text_atomically
from pipelines.io.safe import read_json, remove_quietly, writing
from pipelines.runs.lock import LOCK_FILE, lock_run_dir
from plugins.errors import CheckpointError, RunDirError, TokarError
from plugins.manager import tokar_version

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
RUN_FILE = "run.json"
CLASSES_FILE = "classes.json"  # the data's class names, when it has them (`--class NAME`)
METRICS_FILE = "metrics.jsonl"
STATUSES = ("preparing", "running", "complete", "saved")

# what a resume may change: how long and how verbosely it trains, never the model or data
RESUMABLE = ("train.max_steps", "train.max_seconds", "train.eval_every", "train.eval_samples",
             "train.log_every",
             "train.checkpoint_every", "train.keep_checkpoints", "train.early_stopping_patience",
             "train.early_stopping_min_delta", "train.num_workers", "train.log_with",
             "train.memory_limit_gb", "train.threads", "sample")


def require_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        what = "does not exist" if not run_dir.exists() else "is a file, not a directory"
        raise RunDirError(f"{run_dir} {what}; pass a run directory made by `tokar train`.")
    if not (run_dir / RECIPE_FILE).is_file() or not (run_dir / "tokenizer").is_dir():
        raise RunDirError(
            f"{run_dir} is not a tokar run directory (no {RECIPE_FILE} and tokenizer/ in it); "
            "pass the folder that `tokar train` printed."
        )


# -- ownership ---------------------------------------------------------------------------------------
def run_status(run_dir: Path) -> str | None:
    """The status in run.json when tokar wrote it ("preparing", "running", "complete"...), else
    None (no run.json, or one that is corrupt or not tokar's)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        payload = read_json(path, "run file", RunDirError, max_bytes=1 << 20)
    except TokarError:
        return None
    status = payload.get("status")
    return status if "tokar_version" in payload and status in STATUSES else None


def run_record(run_dir: Path) -> dict[str, Any]:
    """run.json as a dict ({} when it is missing or unreadable: it is tokar's status file, and
    a run whose status file broke is still the user's run)."""
    try:
        return read_json(Path(run_dir) / RUN_FILE, "run file", RunDirError, max_bytes=1 << 20)
    except TokarError:
        return {}


def _only_lock_files(run_dir: Path) -> bool:
    return all(p.name == LOCK_FILE for p in run_dir.iterdir())


def check_trainable(run_dir: Path) -> None:
    """Raise unless `tokar train --run-dir run_dir` may write there (nothing is written here)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--run-dir {run_dir} is an existing file; pass a new directory.")
    if not run_dir.exists() or _only_lock_files(run_dir):
        return
    if (run_dir / RECIPE_FILE).exists() or run_status(run_dir) in ("running", "complete", "saved"):
        raise RunDirError(
            f"{run_dir} already holds a run; pass another --run-dir (or delete it) so "
            f"that nothing in it is overwritten, or continue it with `tokar train "
            f"--resume {run_dir}`."
        )
    if run_status(run_dir) is None:
        raise RunDirError(
            f"{run_dir} exists and is not a tokar run directory (it is not empty and has no "
            f"{RUN_FILE} written by tokar); tokar will not write its files among yours. Pass a new "
            "or empty --run-dir."
        )
    # else: marked by tokar, but the run stopped before training began: safe to start again


def claim_run_dir(run_dir: str | Path | None, stem: str = "run") -> Path:
    """Make `run_dir` (default: a new runs/<stem>-<time>) this process's run: check that it may be
    written, create it, lock it and mark it. Main process only."""
    if run_dir is None:
        run_dir = _new_default_dir(stem)
    run_dir = Path(run_dir)
    check_trainable(run_dir)
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    lock_run_dir(run_dir)
    check_trainable(run_dir)  # again, under the lock: another process may have trained it meanwhile
    write_run_file(run_dir, "preparing")
    return run_dir


def abandon_run_dir(run_dir: Path, created: bool) -> None:
    """A run that failed before training began leaves nothing behind: its folder removed when this
    process created it, else emptied of what tokar wrote (check_trainable let it be used only
    because it was empty or a tokar "preparing" run), the lock file kept. Only a run still
    "preparing" is touched: never a user's files, never a run that trained."""
    run_dir = Path(run_dir)
    if run_status(run_dir) != "preparing" or (run_dir / RECIPE_FILE).exists():
        return
    if created:
        remove_quietly(run_dir)
        return
    for child in run_dir.iterdir():
        if child.name != LOCK_FILE:
            remove_quietly(child)


def _new_default_dir(stem: str, root: Path = Path("runs")) -> Path:
    """runs/<stem>-<YYYYmmdd-HHMMSS>, with -2, -3... when that exists: created exclusively, so two
    runs started in the same second get different directories."""
    base = root / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    with writing(root):
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    raise RunDirError(f"could not find a free run directory name next to {base}; pass --run-dir.")


def write_run_file(run_dir: Path, status: str, **extra: Any) -> None:
    write_json_atomically(Path(run_dir) / RUN_FILE,
                          {"status": status, "tokar_version": tokar_version(), **extra})


def mark_saved_dir(directory: Path) -> None:
    """Before Pipeline.save writes into `directory`: refuse a directory of someone else's files,
    and mark a new one as tokar's."""
    if directory.exists() and directory.is_dir() and not _only_lock_files(directory) \
            and run_status(directory) is None:
        raise RunDirError(f"{directory} exists and is not a tokar run directory (it is not empty "
                          f"and has no {RUN_FILE} written by tokar); save into a new or empty one.")
    with writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
    if run_status(directory) is None:
        write_run_file(directory, "saved")


# -- reading a run ---------------------------------------------------------------------------------
def read_class_names(run_dir: Path) -> list[str] | None:
    path = Path(run_dir) / CLASSES_FILE
    if not path.exists():
        return None
    names = read_json(path, "class names file", RunDirError, expect=list)
    if not all(isinstance(n, str) for n in names):
        raise RunDirError(f"class names file {path} is corrupt: expected a JSON list of strings.")
    return names


def load_saved(cls: Any, directory: Path, kind: str, **settings: Any) -> Any:
    """cls.from_pretrained(directory, **settings), with anything a damaged or hand-edited saved folder can
    make it raise reported as a CheckpointError naming the folder."""
    if not directory.is_dir():
        raise CheckpointError(f"no saved {kind} in {directory.parent}: {directory} is missing.")
    try:
        return cls.from_pretrained(directory, **settings)
    except TokarError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OSError,
            UnicodeDecodeError, RuntimeError) as exc:
        raise CheckpointError(
            f"the saved {kind} in {directory} cannot be loaded ({type(exc).__name__}: {exc}); its "
            "config.json or weights are corrupt or from an incompatible version."
        ) from exc


def diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted key paths whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [prefix]


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step`; a line cut short by a crash (or otherwise unreadable) is
    dropped."""
    if not path.exists():
        return
    keep = []
    for raw in path.read_bytes().splitlines():
        try:
            record = json.loads(raw.decode("utf-8"))
            if record.get("step", 0) <= step:
                keep.append(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, AttributeError, TypeError):
            logger.warning("%s: dropping an unreadable line: %.60r", path, raw)
    write_text_atomically(path, "".join(line + "\n" for line in keep))


# -- writing -------------------------------------------------------------------------------------------


