"""The run directory: its files, and writing them so that a crash never leaves a half-written
file that a later run would trust.

    RUN_DIR/recipe.yaml   run.json   tokenizer/   prior/   checkpoints/   metrics.jsonl   samples/
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugins.errors import RunDirError

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
RUN_FILE = "run.json"
CLASSES_FILE = "classes.json"  # the data's class names, when it has them (`--class NAME`)

# what a resume may change: how long and how verbosely it trains, never the model or data
RESUMABLE = ("train.max_steps", "train.eval_every", "train.eval_samples", "train.log_every",
             "train.checkpoint_every", "train.keep_checkpoints", "train.early_stopping_patience",
             "train.early_stopping_min_delta", "train.num_workers", "train.log_with", "sample")


def require_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory; pass a run directory made by `tokar train`.")
    if not (run_dir / RECIPE_FILE).is_file() or not (run_dir / "tokenizer").is_dir():
        raise RunDirError(
            f"{run_dir} is not a tokar run directory (no {RECIPE_FILE} and tokenizer/ in it); "
            "pass the folder that `tokar train` printed."
        )


def diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted key paths whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [prefix]


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step`; a line cut short by a crash is dropped."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except (json.JSONDecodeError, AttributeError):
            logger.warning("%s: dropping an unreadable line: %.60s", path, line)
    write_text_atomically(path, "".join(line + "\n" for line in keep))


def remove_atomically(path: Path) -> None:
    if path.exists():
        old = path.with_name(f".old-{path.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        shutil.rmtree(old, ignore_errors=True)


def write_file_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Call write(tmp_path), then move the file into place in one rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomically(path: Path, text: str) -> None:
    write_file_atomically(path, lambda tmp: tmp.write_text(text))


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomically(path, json.dumps(payload, indent=2) + "\n")

