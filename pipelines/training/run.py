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
needs fitting, trains the prior with the one loop (pipelines/training/trainer.py) and writes the results;
`TrainingRun.resume` continues an interrupted run exactly. `Pipeline.train` / `Pipeline.resume`
are the front doors; what a trained pipeline does afterwards (sample, score) is in pipeline.py.
Under `accelerate launch` / `torchrun` every process runs this; only the main one writes files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from PIL import Image

from pipelines.data import sources
from pipelines.data.augment import Mutation
from pipelines.recipe.limits import check_training_memory, check_training_window
from pipelines.recipe.loader import load_recipe
from pipelines.runs.lock import lock_run_dir
from pipelines.runs.rundir import (
    CLASSES_FILE,
    RECIPE_FILE,
    RESUMABLE,
    RUN_FILE,
    claim_run_dir,
    diff,
    load_saved,
    require_run_dir,
    write_json_atomically,
    write_text_atomically,
)
from pipelines.runs.samples import write_samples
from pipelines.training import stage1
from pipelines.training.checkpoint import Checkpoint, write_atomically
from pipelines.training.resume import plan_resume
from pipelines.training.trainer import Trainer, TrainResult, make_accelerator, process_state
from plugins.errors import DataError, RecipeError, TokarError
from plugins.manager import tokar_version
from plugins.registry import Registries
from plugins.resources import use_threads

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
        use_threads(pipe.recipe.train.threads, "train.threads")  # tokenizer fitting counts too
        pipe.run_dir = self._claim_run_dir(run_dir, ps)
        splits = self._load_splits()
        pipe.class_names = sources.class_names(splits["train"])
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
        check_training_memory(pipe.recipe, pipe.tokenizer.vocab_size, pipe.tokenizer.layout)
        pipe._prior = pipe.build_prior()
        check_training_window(pipe.recipe, pipe._prior)
        self._check_labels(tokens["train"])
        self._check_labels(tokens.get("validation"))
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
        """Continue an interrupted run from its newest intact checkpoint, exactly: the result
        equals an uninterrupted run. Overrides may change only how long and how verbosely it
        trains (train.max_steps, eval/log/checkpoint intervals...), never the model or data.
        Everything is checked before the run changes (pipelines/training/resume.py); a complete run is
        left as it is unless train.max_steps grows."""
        from pipelines.pipeline import Pipeline

        run_dir = Path(run_dir)
        require_run_dir(run_dir)
        ps = process_state()
        if ps.is_main_process:
            lock_run_dir(run_dir)  # one writer per run, from before anything is read
        saved = load_recipe(run_dir / RECIPE_FILE, registries=registries)
        recipe = load_recipe(run_dir / RECIPE_FILE, overrides, registries)
        changed = [k for k in diff(saved.to_dict(), recipe.to_dict())
                   if not any(k == a or k.startswith(a + ".") for a in RESUMABLE)]
        if changed:
            raise RecipeError([
                f"resuming {run_dir} cannot change {', '.join(changed)}: the checkpoint was "
                f"trained with other values. Only {', '.join(RESUMABLE)} may change on resume; "
                "start a new run for anything else."])
        plan = plan_resume(run_dir, saved, recipe)
        if plan.done:
            loaded = Pipeline.load(run_dir, registries)
            return loaded, plan.recorded_result(loaded.tokenizer.unit)
        pipe = Pipeline(recipe, load_saved(recipe.tokenizer.cls, run_dir / "tokenizer", "tokenizer"),
                        run_dir=run_dir)
        run = cls(pipe)
        splits = run._load_splits()
        with ps.main_process_first():
            tokens = run._tokenize(splits)
        check_training_memory(recipe, pipe.tokenizer.vocab_size, pipe.tokenizer.layout)
        pipe._prior = pipe.build_prior()
        run._check_labels(tokens["train"])
        ckpt = plan.choose_checkpoint(pipe._prior, ps.num_processes)  # verified; nothing changed yet
        return pipe, run._train(tokens, ckpt, progress, before_fit=plan.commit)

    # -- the steps of a run --------------------------------------------------------------------
    def _train(self, tokens: dict[str, sources.TokenData], ckpt: Checkpoint | None,
               progress: bool, before_fit: Any = None) -> TrainResult:
        pipe = self.pipe
        cfg = pipe.recipe.train
        use_threads(cfg.threads, "train.threads")
        accelerator = make_accelerator(cfg, pipe.run_dir)
        if cfg.log_with:
            accelerator.init_trackers(pipe.run_dir.name, config=_flat(pipe.recipe.to_dict()))
        logger.info("prior '%s': %.2fM parameters", pipe.recipe.prior.name,
                    pipe.prior.num_parameters() / 1e6)
        trainer = Trainer(pipe.prior, tokens["train"], tokens.get("validation"), cfg,
                          pipe.run_dir, pipe.tokenizer.unit, accelerator, progress,
                          on_eval=self._write_eval_samples if cfg.eval_samples else None,
                          offset_nats=pipe.tokenizer.discretization_nats(),
                          augment=self._augment(accelerator.process_index))
        if ckpt is not None:
            trainer.resume_from(ckpt)
        if before_fit is not None:  # a resume changes the run only now that training continues
            if accelerator.is_main_process:
                before_fit()
            accelerator.wait_for_everyone()
        result = trainer.fit()
        pipe.prior.eval()
        if accelerator.is_main_process:
            write_atomically(pipe.run_dir / "prior", pipe.prior.save)
            self._write_run_file("complete", result={
                "steps": result.steps, "seconds": result.seconds, "train_loss": result.train_loss,
                "val_bits_per_unit": result.val.bits_per_unit if result.val else None,
                "best_val_loss": result.best_val_loss, "stopped_early": result.stopped_early,
                "unit": pipe.tokenizer.unit})
            try:  # after the result is recorded: a sample that fails costs nothing of the run
                write_samples(pipe.sample(pipe.recipe.sample.n), pipe.run_dir / "samples",
                              pipe.grid_columns(), tokenizer=pipe.tokenizer)
            except TokarError as exc:
                logger.warning("could not write the final samples: %s", exc)
        accelerator.wait_for_everyone()
        return result

    def _augment(self, process_index: int) -> Mutation | None:
        """The training-batch perturbation the recipe asks for (data.augment), if any."""
        augment = getattr(self.pipe.recipe.data.config, "augment", None)
        if augment is None or augment.mutate == 0:
            return None
        return Mutation(augment.mutate, self.pipe.tokenizer.vocab_size, self.pipe.recipe.train.seed,
                        process_index)

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
        return sources.tokenize(splits, self.pipe.ordered_tokenizer, getattr(config, "num_proc", None),
                                 getattr(config, "shuffle_buffer", 10_000))

    def _claim_run_dir(self, run_dir: str | Path | None, ps: PartialState) -> Path:
        if ps.is_main_process:  # may it be written? then create, lock and mark it (rundir.py)
            source = self.pipe.recipe.source
            run_dir = claim_run_dir(run_dir, Path(source).stem if source else "run")
        if ps.num_processes > 1:  # the main process names the run for everyone
            run_dir = broadcast_object_list([str(run_dir) if run_dir is not None else None])[0]
        ps.wait_for_everyone()
        return Path(run_dir)

    def _write_run_file(self, status: str, **extra: Any) -> None:

        payload = {"status": status, "tokar_version": tokar_version(), **extra}
        write_json_atomically(self.pipe.run_dir / RUN_FILE, payload)

    def _check_labels(self, split: sources.TokenData | None) -> None:
        n_classes = self.pipe.prior.num_classes
        if not n_classes or not isinstance(split, sources.TokenData) or len(split) == 0:
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
