"""Resuming a run without ever damaging it: everything a resume reads is checked before the run
changes at all, and a resume with nothing to do changes nothing.

1. `plan_resume`: what there is to do, from run.json and the recipes. A complete run whose
   train.max_steps does not grow is a no-op (a message; its recorded result stays as it is).
2. `ResumePlan.choose_checkpoint`: the newest checkpoint that verifies (SHA-256 of its files,
   state.json, weights, optimizer state and random states against the model). A damaged newer
   one is skipped with a warning; if none is intact, the error lists why and nothing changed.
   train.max_steps below the steps already trained is refused: the recipe would record steps the
   weights do not have.
3. `ResumePlan.commit`, called once the trainer holds the checkpoint: only now does the run
   change. Metrics logged after the checkpoint are dropped, stale final weights (prior/) removed,
   damaged checkpoints set aside (renamed damaged-step_*, never deleted), temporary folders of
   dead writers removed (the run is locked: no live writer can own them), recipe.yaml and
   run.json updated.

Not here: the training loop and the exactness of a resume (pipelines/training/trainer.py, batches.py), the
lock (pipelines/runs/lock.py).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.io.atomic import remove_atomically, write_text_atomically
from pipelines.io.safe import remove_quietly
from pipelines.recipe.loader import Recipe
from pipelines.runs.rundir import METRICS_FILE, RECIPE_FILE, run_record, truncate_metrics, write_run_file
from pipelines.scoring import Score
from pipelines.training import checkpoint
from pipelines.training.trainer import TrainResult, param_groups
from plugins.errors import CheckpointError, RecipeError, TokarError

logger = logging.getLogger(__name__)


@dataclass
class ResumePlan:
    run_dir: Path
    recipe: Recipe  # with the overrides
    saved: Recipe  # as the run recorded it
    done: bool = False  # complete, and nothing asks for more steps
    checkpoint: checkpoint.Checkpoint | None = None
    damaged: list[checkpoint.Checkpoint] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.run_dir / "checkpoints"

    def choose_checkpoint(self, prior: Any, world_size: int = 1) -> checkpoint.Checkpoint | None:
        """Verify checkpoints newest first and keep the first intact one (loaded into `prior`,
        which the trainer reloads anyway). Changes nothing on disk."""
        ckpts = checkpoint.list_checkpoints(self.root)
        params = [p for group in param_groups(prior, self.recipe.train.weight_decay)
                  for p in group["params"]]
        problems = []
        for candidate in reversed(ckpts):
            try:
                checkpoint.verify_checkpoint(candidate, prior, params, world_size)
            except TokarError as exc:
                problems.append(f"{candidate.path.name}: {exc}")
                self.damaged.append(candidate)
                continue
            self.checkpoint = candidate
            break
        if ckpts and self.checkpoint is None:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise CheckpointError(
                f"cannot resume {self.run_dir}: none of its checkpoints is intact:\n{lines}\n"
                f"Nothing in the run was changed. Start it again from its recipe: `tokar train "
                f"{self.run_dir / RECIPE_FILE} --run-dir NEW_DIR`."
            )
        if self.damaged:
            logger.warning("resuming %s from %s: newer checkpoint(s) %s are damaged (%s); they "
                           "will be set aside as damaged-*", self.run_dir, self.checkpoint.path.name,
                           ", ".join(c.path.name for c in self.damaged), "; ".join(problems))
        steps = self.checkpoint.step if self.checkpoint else 0
        if self.recipe.train.max_steps < steps:
            raise RecipeError([
                f"train.max_steps={self.recipe.train.max_steps} is below the {steps} steps {self.run_dir} "
                f"has already trained; pass train.max_steps={steps} or more (nothing was changed)."])
        return self.checkpoint

    def commit(self) -> None:
        """Change the run: called only once training is sure to continue. Main process only."""
        step = self.checkpoint.step if self.checkpoint else 0
        for bad in self.damaged:
            aside = bad.path.with_name(f"damaged-{bad.path.name}")
            remove_quietly(aside)
            os.replace(bad.path, aside)
            logger.warning("set aside the damaged checkpoint %s as %s (delete it when you no "
                           "longer need it)", bad.path, aside.name)
        if self.root.is_dir():
            for stale in self.root.glob(".tmp-*"):  # saves that died with their process
                remove_quietly(stale)
        # Metrics logged after that checkpoint will be logged again: drop them.
        truncate_metrics(self.run_dir / METRICS_FILE, step)
        # Final weights of an earlier completion are stale from now on: Pipeline.load must fall
        # back to the newest checkpoint until this resume completes.
        remove_atomically(self.run_dir / "prior")
        write_text_atomically(self.run_dir / RECIPE_FILE, self.recipe.dump())
        write_run_file(self.run_dir, "running")

    def recorded_result(self, unit: str) -> TrainResult:
        """The result a complete run recorded (for a resume with nothing to do)."""
        result = run_record(self.run_dir).get("result") or {}
        history = []
        for c in reversed(checkpoint.list_checkpoints(self.root)):
            try:
                history = c.state().get("history") or []
                break
            except TokarError:
                continue
        last = history[-1] if history and isinstance(history[-1], dict) else None
        val = None
        if last is not None and isinstance(last.get("loss"), int | float):
            bits = last.get("bits_per_unit", math.nan)
            val = Score(unit, bits, last["loss"], 0, 0, 0, {unit: bits})

        def number(key: str, default: float) -> float:
            value = result.get(key)
            return value if isinstance(value, int | float) else default

        stopped_by = result.get("stopped_by")
        return TrainResult(int(number("steps", 0)), number("train_loss", math.nan), val,
                           number("seconds", 0.0), 0.0, result.get("best_val_loss"),
                           bool(result.get("stopped_early", False)),
                           stopped_by if isinstance(stopped_by, str) else "max_steps")


def complete_message(run_dir: Path, saved: Recipe, result: dict[str, Any]) -> str:
    """Why a complete run stopped, naming the limit that stopped it, and how to train further."""
    steps = result.get("steps", "all")
    head = f"{run_dir} is complete: nothing to resume, nothing changed."
    if result.get("stopped_by") == "max_seconds" and saved.train.max_seconds is not None:
        return (f"{head} Its time budget train.max_seconds={saved.train.max_seconds:g} stopped it "
                f"after {steps} of train.max_steps={saved.train.max_steps} steps. To train for N more "
                f"seconds: `tokar train --resume {run_dir} train.max_seconds=N`.")
    if result.get("stopped_by") == "early_stopping" or result.get("stopped_early"):
        return (f"{head} Early stopping ended it after {steps} steps (no improvement in "
                f"train.early_stopping_patience={saved.train.early_stopping_patience} evaluations).")
    return (f"{head} It trained {steps} of train.max_steps={saved.train.max_steps} steps. To train "
            f"further, raise it: `tokar train --resume {run_dir} "
            f"train.max_steps={saved.train.max_steps * 2}`.")


def plan_resume(run_dir: Path, saved: Recipe, recipe: Recipe, more_time: bool = False) -> ResumePlan:
    """What a resume of `run_dir` with `recipe` (the saved one plus overrides) has to do;
    `more_time`: train.max_seconds was given, granting that many more seconds."""
    plan = ResumePlan(run_dir, recipe, saved)
    record = run_record(run_dir)
    status, result = record.get("status"), record.get("result") or {}
    trained = result.get("steps") if isinstance(result.get("steps"), int) else None
    if status == "complete" and trained is not None and recipe.train.max_steps < trained:
        raise RecipeError([
            f"train.max_steps={recipe.train.max_steps} is below the {trained} steps {run_dir} has "
            f"already trained; pass train.max_steps={trained} or more (nothing was changed)."])
    grows = recipe.train.max_steps > saved.train.max_steps
    stopped_by = result.get("stopped_by")
    # a run its time budget ended before max_steps goes on when given more time
    out_of_time = stopped_by == "max_seconds" and trained is not None \
        and trained < recipe.train.max_steps
    if status == "complete" and not grows and not (out_of_time and more_time) \
            and (run_dir / "prior").is_dir():
        plan.done = True
        logger.warning("%s", complete_message(run_dir, saved, result))
    elif status == "complete" and not checkpoint.list_checkpoints(run_dir / "checkpoints"):
        raise CheckpointError(f"{run_dir} is complete but holds no checkpoint to continue from "
                              "(checkpoints/ is empty); start a new run to train longer.")
    return plan
