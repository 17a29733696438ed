"""Running a training: the life of a run directory, from `tokar train` to "complete".

    RUN_DIR/
      recipe.yaml      the resolved recipe (every default filled in)
      run.json         status ("running" / "complete") and the tokar version that wrote it
      tokenizer/       config.json (+ tokenizer.safetensors)
      prior/           config.json + model.safetensors (final weights)
      checkpoints/     step_NNNNNNN/ written atomically during training
      metrics.jsonl    one JSON object per log line / evaluation
      samples/         samples written at the end of training and by `tokar sample`

A `TrainingRun` claims the directory, loads and tokenizes the data, fits the tokenizer when it
needs fitting, trains the prior with the one loop (pipelines/train.py) and writes the results;
`TrainingRun.resume` continues an interrupted run exactly. `Pipeline.train` / `Pipeline.resume`
are the front doors; what a trained pipeline does afterwards (sample, score) is in pipeline.py.
Under `accelerate launch` / `torchrun` every process runs this; only the main one writes files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from PIL import Image

from pipelines import data as data_lib
from pipelines import stage1
from pipelines.checkpoint import Checkpoint, list_checkpoints, write_atomically
from pipelines.recipe import load_recipe
from pipelines.rundir import (
    CLASSES_FILE,
    RECIPE_FILE,
    RESUMABLE,
    RUN_FILE,
    diff,
    remove_atomically,
    require_run_dir,
    truncate_metrics,
    write_json_atomically,
    write_text_atomically,
)
from pipelines.samples import write_samples
from pipelines.train import Trainer, TrainResult, make_accelerator, process_state
from plugins.errors import DataError, RecipeError, RunDirError
from plugins.registry import Registries

if TYPE_CHECKING:
    from pipelines.pipeline import Pipeline

logger = logging.getLogger(__name__)

FIT_EXAMPLES = 10_000  # how much of a streamed training split fits a tokenizer


class TrainingRun:
    """One training of `pipe` into a run directory."""

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe

    def start(self, run_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
        """Fit the tokenizer if it needs it, train the prior, save everything under `run_dir`."""
        pipe, ps = self.pipe, process_state()
        pipe.run_dir = self._claim_run_dir(run_dir, ps)
        splits = self._load_splits()
        pipe.class_names = data_lib.class_names(splits["train"])
        # The main process fits the tokenizer (fitting may be random: VQ codebooks) and fills the
        # tokenized cache; the others then load exactly what it saved.
        with ps.main_process_first():
            if ps.is_main_process:
                if not pipe.tokenizer.is_fitted:
                    logger.info("fitting tokenizer '%s'", pipe.recipe.tokenizer.name)
                    pipe.tokenizer.fit(_fit_examples(splits["train"]))
                write_atomically(pipe.run_dir / "tokenizer", pipe.tokenizer.save)
                if stage1.needs_health(pipe.tokenizer):  # check the code before stage 2 uses it
                    stage1.write_health(pipe.tokenizer, stage1.held_out(splits), pipe.run_dir)
            else:
                pipe.tokenizer = type(pipe.tokenizer).from_pretrained(pipe.run_dir / "tokenizer")
            tokens = self._tokenize(splits)
        pipe._prior = pipe.build_prior()
        self._check_labels(tokens["train"])
        # Only now is this a run: a recipe that fails before this point leaves no run behind.
        if ps.is_main_process:
            write_text_atomically(pipe.run_dir / RECIPE_FILE, pipe.recipe.dump())
            if pipe.class_names is not None:
                write_json_atomically(pipe.run_dir / CLASSES_FILE, pipe.class_names)
            self._write_run_file("running")
        return self._train(tokens, None, progress)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] | tuple = (), progress: bool = True,
               registries: Registries | None = None) -> tuple[Pipeline, TrainResult]:
        """Continue an interrupted run from its newest complete checkpoint, exactly: the result
        equals an uninterrupted run. Overrides may change only how long and how verbosely it
        trains (train.max_steps, eval/log/checkpoint intervals...), never the model or data."""
        from pipelines.pipeline import Pipeline

        run_dir = Path(run_dir)
        require_run_dir(run_dir)
        saved = load_recipe(run_dir / RECIPE_FILE, registries=registries)
        recipe = load_recipe(run_dir / RECIPE_FILE, overrides, registries)
        changed = [k for k in diff(saved.to_dict(), recipe.to_dict())
                   if not any(k == a or k.startswith(a + ".") for a in RESUMABLE)]
        if changed:
            raise RecipeError([
                f"resuming {run_dir} cannot change {', '.join(changed)}: the checkpoint was "
                f"trained with other values. Only {', '.join(RESUMABLE)} may change on resume; "
                "start a new run for anything else."])
        pipe = Pipeline(recipe, recipe.tokenizer.cls.from_pretrained(run_dir / "tokenizer"),
                        run_dir=run_dir)
        run = cls(pipe)
        splits = run._load_splits()
        ps = process_state()
        with ps.main_process_first():
            tokens = run._tokenize(splits)
        pipe._prior = pipe.build_prior()
        run._check_labels(tokens["train"])
        ckpts = list_checkpoints(run_dir / "checkpoints")
        ckpt = ckpts[-1] if ckpts else None
        if ps.is_main_process:
            # Metrics logged after that checkpoint will be logged again: drop them.
            truncate_metrics(run_dir / "metrics.jsonl", ckpt.step if ckpt else 0)
            # Final weights of an earlier completion are stale from now on: Pipeline.load must
            # fall back to the newest checkpoint until this resume completes.
            remove_atomically(run_dir / "prior")
            write_text_atomically(run_dir / RECIPE_FILE, recipe.dump())
            run._write_run_file("running")
        ps.wait_for_everyone()
        return pipe, run._train(tokens, ckpt, progress)

    # -- the steps of a run --------------------------------------------------------------------
    def _train(self, tokens: dict[str, data_lib.TokenData], ckpt: Checkpoint | None,
               progress: bool) -> TrainResult:
        pipe = self.pipe
        cfg = pipe.recipe.train
        accelerator = make_accelerator(cfg, pipe.run_dir)
        if cfg.log_with:
            accelerator.init_trackers(pipe.run_dir.name, config=_flat(pipe.recipe.to_dict()))
        logger.info("prior '%s': %.2fM parameters", pipe.recipe.prior.name,
                    pipe.prior.num_parameters() / 1e6)
        trainer = Trainer(pipe.prior, tokens["train"], tokens.get("validation"), cfg,
                          pipe.run_dir, pipe.tokenizer.unit, accelerator, progress,
                          on_eval=self._write_eval_samples if cfg.eval_samples else None,
                          offset_nats=pipe.tokenizer.discretization_nats())
        if ckpt is not None:
            trainer.resume_from(ckpt)
        result = trainer.fit()
        pipe.prior.eval()
        if accelerator.is_main_process:
            write_atomically(pipe.run_dir / "prior", pipe.prior.save)
            write_samples(pipe.sample(pipe.recipe.sample.n), pipe.run_dir / "samples",
                          pipe.grid_columns(), tokenizer=pipe.tokenizer)
            self._write_run_file("complete", result={
                "steps": result.steps, "seconds": result.seconds, "train_loss": result.train_loss,
                "val_bits_per_unit": result.val.bits_per_unit if result.val else None,
                "best_val_loss": result.best_val_loss, "stopped_early": result.stopped_early,
                "unit": pipe.tokenizer.unit})
        accelerator.wait_for_everyone()
        return result

    def _write_eval_samples(self, step: int) -> None:
        """A quick look at what the model makes at this point of training."""
        pipe = self.pipe
        examples = pipe.sample(pipe.recipe.train.eval_samples)
        # a grid image, a text file, or (audio) a folder of WAVs and their plot
        first = examples[0]
        ext = ".png" if isinstance(first, Image.Image) else ".txt" if isinstance(first, str) else ""
        write_samples(examples, pipe.run_dir / "samples" / f"step_{step:07d}{ext}",
                      pipe.grid_columns(), tokenizer=pipe.tokenizer)

    def _load_splits(self):
        recipe = self.pipe.recipe
        splits = recipe.data.cls(recipe.data.config).load()
        train = splits["train"]
        if not isinstance(train, datasets.IterableDataset) and len(train) == 0:
            raise DataError(f"data source '{recipe.data.name}' gave an empty training split.")
        return splits

    def _tokenize(self, splits) -> dict[str, Any]:
        config = self.pipe.recipe.data.config
        # in the prior's order of positions (recipe `order:`); the cache key names the order
        return data_lib.tokenize(splits, self.pipe.ordered_tokenizer, getattr(config, "num_proc", None),
                                 getattr(config, "shuffle_buffer", 10_000))

    def _claim_run_dir(self, run_dir: str | Path | None, ps: PartialState) -> Path:
        if run_dir is None:
            source = self.pipe.recipe.source
            stem = Path(source).stem if source else "run"
            run_dir = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            if ps.num_processes > 1:  # the main process's clock names the run for everyone
                run_dir = Path(broadcast_object_list([str(run_dir)])[0])
        run_dir = Path(run_dir)
        if ps.is_main_process:
            if (run_dir / RECIPE_FILE).exists():
                raise RunDirError(
                    f"{run_dir} already holds a run; pass another --run-dir (or delete it) so "
                    f"that nothing in it is overwritten, or continue it with `tokar train "
                    f"--resume {run_dir}`."
                )
            run_dir.mkdir(parents=True, exist_ok=True)
        ps.wait_for_everyone()
        return run_dir

    def _write_run_file(self, status: str, **extra: Any) -> None:
        from plugins.manager import _tokar_version

        payload = {"status": status, "tokar_version": _tokar_version(), **extra}
        write_json_atomically(self.pipe.run_dir / RUN_FILE, payload)

    def _check_labels(self, split: data_lib.TokenData) -> None:
        n_classes = self.pipe.prior.num_classes
        if not n_classes or not isinstance(split, data_lib.TokenData):
            return  # a stream's labels are checked as they arrive, by the embedding lookup
        if split.labels is None:
            raise DataError(
                f"prior.n_classes={n_classes} asks for class conditioning, but the data has no "
                "labels; set data.label_column (hf source) or prior.n_classes=0."
            )
        if split.labels.min() < 0 or split.labels.max() >= n_classes:
            raise DataError(
                f"labels range over [{split.labels.min()}, {split.labels.max()}] but "
                f"prior.n_classes={n_classes}; set prior.n_classes={split.labels.max() + 1}."
            )


def _fit_examples(train) -> Any:
    """The examples a tokenizer fits on: all of them, or the head of a stream."""
    if isinstance(train, datasets.IterableDataset):
        return (row["example"] for row in train.take(FIT_EXAMPLES))
    return train["example"]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested recipe -> {"train.lr": ...} with scalar values (what trackers accept)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
